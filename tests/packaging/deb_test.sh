#!/usr/bin/env bash
# The Debian package: built with CPack from this build, installed with dpkg into a fresh root
# (dpkg --root: its own package database; the libraries it depends on are this machine's), its
# files where Debian puts them, its binaries run from there (`gpupool --version`, and `gpupool
# sim` on the example fleet it installs), the man page readable, and `systemd-analyze verify`
# accepting its units against that root. Usage: deb_test.sh BUILD_DIR SOURCE_DIR TRACES_DIR
set -uo pipefail
build="$1"
src="$2"
traces="$3"
work="$(mktemp -d /tmp/gpupool-deb-XXXX)"
trap 'rm -rf "$work"' EXIT
pass=0
fail=0
check() {  # check WHAT COMMAND...
  local what="$1"
  shift
  if "$@" >"$work/out" 2>&1; then
    pass=$((pass + 1))
  else
    fail=$((fail + 1))
    echo "FAIL $what: $(tail -c 400 "$work/out")"
  fi
}

(cd "$work" && cpack -G DEB --config "$build/CPackConfig.cmake" >cpack.log 2>&1) || { cat "$work/cpack.log"; exit 1; }
deb="$work/gpupool_$(sed -n 's/^set(CPACK_PACKAGE_VERSION "\(.*\)")/\1/p' "$build/CPackConfig.cmake")_$(dpkg --print-architecture).deb"
check "cpack made $deb" test -s "$deb"
check "the package's metadata names its dependencies" sh -c "dpkg-deb -f '$deb' Depends | grep -q libssl3"
check "the configuration files are conffiles" sh -c "dpkg-deb --ctrl-tarfile '$deb' | tar -xO ./conffiles | grep -qx /etc/gpupool/server.conf"

root="$work/root"
mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates" "$root/var/lib/dpkg/triggers" "$root/var/log"
touch "$root/var/lib/dpkg/status"
check "dpkg installs it into a fresh root" dpkg --root="$root" --force-depends --force-not-root -i "$deb"
check "dpkg knows it installed" sh -c "dpkg --root='$root' -s gpupool | grep -q 'install ok installed'"
for f in usr/bin/gpupool usr/bin/gpupool-supervise usr/lib/systemd/system/gpupool-server.service \
         usr/lib/systemd/system/gpupool-agent.service etc/gpupool/server.conf etc/gpupool/agent.env \
         usr/share/man/man1/gpupool.1.gz usr/share/bash-completion/completions/gpupool usr/share/gpupool/fleets/mixed.toml \
         usr/share/doc/gpupool/README.md; do
  check "$f is installed" test -e "$root/$f"
done
if [ -d "$src/web/dist" ]; then
  check "the dashboard is installed" test -e "$root/usr/share/gpupool/web/index.html"
fi
check "gpupool --version runs from the installed path" sh -c "'$root/usr/bin/gpupool' --version | grep -q '^gpupool '"
check "gpupool sim runs from the installed path on the installed example fleet" sh -c \
  "'$root/usr/bin/gpupool' sim --fleet '$root/usr/share/gpupool/fleets/mixed.toml' --trace '$traces/pollux-philly/philly.csv' --policy fifo --format json | grep -q '\"finished\"'"
check "the man page is the CLI's help" sh -c "zcat '$root/usr/share/man/man1/gpupool.1.gz' | grep -q 'gpupool submit'"
if command -v man >/dev/null; then
  check "man renders it" sh -c "MANWIDTH=80 man -l '$root/usr/share/man/man1/gpupool.1.gz' 2>/dev/null | grep -q 'SUBCOMMANDS'"
fi
check "bash completion offers the subcommands" bash -c "
  source '$root/usr/share/bash-completion/completions/gpupool'
  COMP_WORDS=('$root/usr/bin/gpupool' su); COMP_CWORD=1; _gpupool
  printf '%s\n' \"\${COMPREPLY[@]}\" | grep -qx submit"
# The units against that root: systemd's own targets copied in, so that verify finds them.
mkdir -p "$root/usr/lib/systemd/system"
cp -n /usr/lib/systemd/system/*.target /usr/lib/systemd/system/*.slice "$root/usr/lib/systemd/system/" 2>/dev/null
check "systemd-analyze verify accepts the units" systemd-analyze verify --man=no --root="$root" \
  /usr/lib/systemd/system/gpupool-server.service /usr/lib/systemd/system/gpupool-agent.service
check "dpkg removes it, keeping the configuration" sh -c "dpkg --root='$root' --force-not-root -r gpupool && test -e '$root/etc/gpupool/server.conf' && ! test -e '$root/usr/bin/gpupool'"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
