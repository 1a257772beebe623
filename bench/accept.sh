#!/bin/bash
# Durable single-job submissions per second: a real `gpupool server` on a fresh store, and ab
# (apache2-utils) posting one-GPU jobs over C keep-alive connections, each job answered 201
# only once stored. Several binaries take turns, round after round, so "before" and "after"
# are measured in one run on the same disk. Prints each round's rate and the server's CPU per
# request (user + system, every thread). Usage:
#   bench/accept.sh [-n REQUESTS] [-c CONNECTIONS] [-r ROUNDS] GPUPOOL [GPUPOOL...]
# The jobs ask for an A100, which no node has, so they queue: what is measured is the accept
# path (HTTP, validation, the store's commit and fsync), not placement.
# -e M: the server stores in etcd instead (--store etcd://), on M members (Debian's etcd-server)
# this script starts on loopback, each on its own data directory, and stops at the end.
set -euo pipefail
N=20000; C=8; R=3; E=0
while getopts "n:c:r:e:" o; do
  case $o in n) N=$OPTARG ;; c) C=$OPTARG ;; r) R=$OPTARG ;; e) E=$OPTARG ;; *) exit 2 ;; esac
done
shift $((OPTIND - 1))
[ $# -ge 1 ] || { echo "usage: $0 [-n N] [-c C] [-r R] GPUPOOL..." >&2; exit 2; }
command -v ab >/dev/null || { echo "ab (apache2-utils) is needed" >&2; exit 2; }
work=$(mktemp -d /tmp/gpupool-accept-XXXXXX)
trap 'rm -rf "$work"' EXIT
echo '{"command":["true"],"gpus":1,"gpu_model":"A100"}' > "$work/job.json"
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(freeport)
store=()
if [ "$E" -gt 0 ]; then
  command -v etcd >/dev/null || { echo "etcd (etcd-server) is needed for -e" >&2; exit 2; }
  cluster=""; endpoints=""; cports=(); pports=()
  for i in $(seq 1 "$E"); do cports+=("$(freeport)"); pports+=("$(freeport)"); done
  for i in $(seq 0 $((E - 1))); do cluster+="${cluster:+,}m$i=http://127.0.0.1:${pports[$i]}"; endpoints+="${endpoints:+,}127.0.0.1:${cports[$i]}"; done
  epids=()
  for i in $(seq 0 $((E - 1))); do
    etcd --name "m$i" --data-dir "$work/etcd-m$i" --listen-client-urls "http://127.0.0.1:${cports[$i]}" \
      --advertise-client-urls "http://127.0.0.1:${cports[$i]}" --listen-peer-urls "http://127.0.0.1:${pports[$i]}" \
      --initial-advertise-peer-urls "http://127.0.0.1:${pports[$i]}" --initial-cluster "$cluster" --log-level error \
      > "$work/etcd-m$i.log" 2>&1 &
    epids+=($!)
  done
  trap 'kill "${epids[@]}" 2>/dev/null; rm -rf "$work"' EXIT
  for _ in $(seq 1 200); do curl -sf "http://127.0.0.1:${cports[0]}/health" | grep -q true && break; sleep 0.1; done
fi
echo "| binary | round | jobs/s | server CPU per job (us) |"
echo "|---|---|---|---|"
for round in $(seq 1 "$R"); do
  for bin in "$@"; do
    d="$work/$round-$(basename "$(dirname "$bin")")"
    [ "$E" -gt 0 ] && store=(--store "etcd://$endpoints" --store-prefix "/bench/$round-$(basename "$(dirname "$bin")")")
    "$bin" server --listen "127.0.0.1:$port" --data-dir "$d" --policy fifo --events-retain 0 "${store[@]}" > "$d.out" 2> "$d.err" &
    pid=$!
    for _ in $(seq 1 100); do grep -q listening "$d.out" 2>/dev/null && break; sleep 0.05; done
    # With etcd the server serves once elected.
    for _ in $(seq 1 100); do curl -s "http://127.0.0.1:$port/v1/leader" | grep -q '"role":"leader"' && break; sleep 0.05; done
    token=$(cat "$d/admin.token")
    post() { ab -q -k -c "$C" -n "$1" -p "$work/job.json" -T application/json -H "Authorization: Bearer $token" \
               "http://127.0.0.1:$port/v1/jobs"; }
    post 2000 > /dev/null  # warm: connections, the log's first pages
    cpu0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    rate=$(post "$N" | awk '/^Requests per second:/ {print $4}')
    cpu1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    ticks=$(getconf CLK_TCK)
    echo "| $bin | $round | $rate | $(( (cpu1 - cpu0) * 1000000 / ticks / N )) |"
    kill "$pid"; wait "$pid" 2>/dev/null || true
  done
done
