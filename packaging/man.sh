#!/usr/bin/env bash
# The man page, generated from the CLI's own help (help2man): gpupool --help, then every
# subcommand's --help as a section of its own. Usage: man.sh GPUPOOL OUT.1
set -euo pipefail
bin="$1"
out="$2"
include="$(mktemp)"
trap 'rm -f "$include"' EXIT
{
  echo "[SUBCOMMANDS]"
  "$bin" --help | awk '/^Subcommands:/{on=1; next} on && NF {print $1}' | while read -r sub; do
    echo ".SS \"gpupool $sub\""
    echo ".nf"
    "$bin" "$sub" --help 2>&1 | sed -e 's/\\/\\\\/g' -e 's/^\./\\\&./' -e "s/^'/\\\\\&'/"
    echo ".fi"
  done
  echo "[FILES]"
  echo "/etc/gpupool/server.conf, /etc/gpupool/server.env, /etc/gpupool/agent.env: the configuration of the"
  echo "gpupool-server and gpupool-agent systemd units. /var/lib/gpupool: the server's data (its store,"
  echo "tokens and CA). /usr/share/gpupool/web: the dashboard. /usr/share/gpupool/fleets: example fleet files."
  echo "[SEE ALSO]"
  echo "/usr/share/doc/gpupool/README.md"
} > "$include"
help2man --no-info --section 1 --name "pool GPUs from many sources into one fleet and schedule work on it" \
  --include "$include" --output "$out" "$bin"
