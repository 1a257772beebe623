#!/usr/bin/env bash
# The gpupool binary as a user runs it: outputs, exit codes and error messages.
# Usage: cli_test.sh GPUPOOL SOURCE_DIR TRACES_DIR
set -u
GP=$1
SRC=$2
TRACES=${GPUPOOL_TRACES:-$3}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
pass=0
fail=0

check() {  # check NAME WANT_RC PATTERN -- CMD...
  local name=$1 want_rc=$2 pattern=$3
  shift 4
  local out rc
  out=$("$@" 2>&1)
  rc=$?
  if [ "$rc" -ne "$want_rc" ] || ! grep -qE -- "$pattern" <<<"$out"; then
    echo "FAIL $name: rc=$rc (want $want_rc), wanted /$pattern/ in:"
    echo "$out" | head -20
    fail=$((fail + 1))
  else
    pass=$((pass + 1))
  fi
}

SEED="$SRC/examples/fleets/seed-4-nodes.toml"
check "seed chooses node-4" 0 "chose node-4" -- "$GP" place --fleet "$SEED" --policy least-loaded --explain
for l in "node-1.*L=1.800" "node-2.*L=1.600" "node-3.*L=1.400" "node-4.*L=0.800"; do
  check "seed explain $l" 0 "$l" -- "$GP" place --fleet "$SEED" --policy least-loaded --explain
done
check "gang across nodes" 0 "task 1 -> node-" -- "$GP" place --fleet 4x8xH100 --gpus 8 --tasks 2
check "never fits" 3 "not placed \(never\)" -- "$GP" place --fleet 2x8xV100 --gpus 8 --tasks 3
check "cluster-wide reason" 3 "cluster: asked 24 GPUs in all, 16 free of 16" -- "$GP" place --fleet 2x8xV100 --gpus 8 --tasks 3
check "per-node reason with numbers" 3 "2 node\(s\): GPUs: asked 12, free 8 of 8" -- "$GP" place --fleet 2x8xV100 --gpus 12
check "unknown model" 3 "no GPU model H100" -- "$GP" place --fleet 2x8xV100 --gpu-model H100
check "unknown policy" 1 "unknown policy 'fastest'; known: balanced" -- "$GP" place --fleet 2x8xV100 --policy fastest
check "gpus out of range" 2 "--gpus" -- "$GP" place --fleet 2x8xV100 --gpus 99
check "bad shorthand" 1 "expected NODESxGPUSxMODEL" -- "$GP" place --fleet 2x99xV100
check "data-local" 0 "chose eu-" -- "$GP" place --fleet "$SRC/examples/fleets/mixed.toml" --policy data-local --data partner-eu:2TB
check "cost" 0 "chose west-l4" -- "$GP" place --fleet "$SRC/examples/fleets/mixed.toml" --policy cost
check "local fleet, simulated GPUs" 0 "task 0 -> .* GPUs \[0,1\]" -- "$GP" place --fleet local:4xH100 --gpus 2 --gpu-model H100
check "probe simulated" 0 '"gpu_source": "simulated"' -- "$GP" probe --gpus 2xA100 --samples 2 --interval 10ms --json
check "probe bad interval" 1 "--interval: 'soon'" -- "$GP" probe --gpus 2xA100 --interval soon
check "submit bytes that are not UTF-8" 2 "--name is not UTF-8 text" -- "$GP" submit --server 127.0.0.1:9 --token t --name $'\xff' -- true
check "submit an array spec that is not UTF-8" 2 "--array is not UTF-8 text" -- "$GP" submit --server 127.0.0.1:9 --token t --array $'\xfe' -- true
if ! command -v nvidia-smi >/dev/null 2>&1; then
  check "probe nvml without a driver" 1 "cannot load libnvidia-ml.so.1" -- "$GP" probe --gpus nvml
  check "gpu-selftest without a driver" 1 "FAILED: cannot load libcuda.so.1" -- "$GP" gpu-selftest --index 0
  check "local fleet without a driver" 1 "local:8xH100" -- "$GP" place --fleet local
fi
check "policies list" 0 "least-loaded .*L = R / U" -- "$GP" policies

printf '[[provider]]\nname = "p"\n[[site]]\nname = "s"\n[[nodes]]\nname = "n"\nsite = "s"\nprovider = "p"\ngpus = 40\n' >"$TMP/bad.toml"
check "bad fleet names line and field" 1 "bad.toml:9: \[\[nodes\]\] 'n': gpus: must be 0..16, got 40" -- "$GP" place --fleet "$TMP/bad.toml"

PHILLY="$TRACES/pollux-philly/philly.csv"
check "sim json" 0 '"jobs":60,"finished":60' -- "$GP" sim --fleet 4x4xV100 --trace "$TRACES/tiresias/60_job.csv" --format json
"$GP" sim --fleet 4x4xV100 --trace "$TRACES/tiresias/60_job.csv" --policy random --seed 9 --format json >"$TMP/a.json"
"$GP" sim --fleet 4x4xV100 --trace "$TRACES/tiresias/60_job.csv" --policy random --seed 9 --format json >"$TMP/b.json"
if cmp -s "$TMP/a.json" "$TMP/b.json" && [ -s "$TMP/a.json" ]; then pass=$((pass + 1)); else echo "FAIL same seed same bytes"; fail=$((fail + 1)); fi
check "sim csv" 0 "^policy,seed,jobs" -- "$GP" sim --fleet 8x4xV100 --trace "$TRACES/gavel/physical_cluster/small_test.trace" --format csv
check "sim out dir" 0 "simulation report" -- "$GP" sim --fleet 8x4xV100 --trace "$TRACES/tiresias/60_job.csv" --out "$TMP/out"
if [ -s "$TMP/out/report.json" ] && [ "$(wc -l <"$TMP/out/jobs.csv")" -eq 61 ]; then pass=$((pass + 1)); else echo "FAIL --out files"; fail=$((fail + 1)); fi
if grep -q "<path " "$TMP/out/jct.svg" && grep -q "<path " "$TMP/out/queue.svg" && grep -q "<path " "$TMP/out/utilisation.svg"; then
  pass=$((pass + 1)); else echo "FAIL --out plots"; fail=$((fail + 1)); fi
check "several policies compared" 0 "index.html compares" -- "$GP" sim --fleet 2x4xV100 --trace "$TRACES/tiresias/60_job.csv" --policy fifo,sjf,las/spread --out "$TMP/cmp"
if [ "$(grep -c '<svg ' "$TMP/cmp/index.html")" -eq 3 ] && [ -s "$TMP/cmp/las-spread/jct.svg" ] && [ "$(grep -c '<path ' "$TMP/cmp/jct.svg")" -eq 3 ]; then
  pass=$((pass + 1)); else echo "FAIL comparison page and per-policy plots"; fail=$((fail + 1)); fi
check "csv of several policies has one header" 0 "^sjf," -- "$GP" sim --fleet 2x4xV100 --trace "$TRACES/tiresias/60_job.csv" --policy fifo,sjf --format csv
if [ "$("$GP" sim --fleet 2x4xV100 --trace "$TRACES/tiresias/60_job.csv" --policy fifo,sjf --format csv | grep -c '^policy,')" -eq 1 ]; then
  pass=$((pass + 1)); else echo "FAIL one csv header for several policies"; fail=$((fail + 1)); fi
check "the teams example fleet runs under fairshare" 0 '"jobs":60' -- "$GP" sim --fleet "$SRC/examples/fleets/philly-teams.toml" --trace "$TRACES/tiresias/60_job.csv" --policy fairshare/fifo --format json
check "equal quotas and a share order" 0 '"jobs":60' -- "$GP" sim --fleet 4x4xV100 --trace "$TRACES/tiresias/60_job.csv" --policy drf/fifo --quotas equal --format json
check "a bad half-life is named" 1 "--half-life" -- "$GP" sim --fleet 4x4xV100 --trace "$TRACES/tiresias/60_job.csv" --half-life 0s
check "a bad policy in a list is named" 1 "unknown policy 'nope'" -- "$GP" sim --fleet 2x4xV100 --trace "$TRACES/tiresias/60_job.csv" --policy fifo,nope

head -3 "$PHILLY" >"$TMP/broken.csv"
echo "2017-10-09 07:01:55,66.0,lots,66.0,x" >>"$TMP/broken.csv"
check "broken row" 1 "broken.csv:4: num_gpus: 'lots' is not a whole number" -- "$GP" sim --fleet 2x8xV100 --trace "$TMP/broken.csv"
check "missing trace" 1 "nope.csv: cannot open" -- "$GP" sim --fleet 2x8xV100 --trace "$TMP/nope.csv"
check "bad format flag" 2 "--format" -- "$GP" sim --fleet 2x8xV100 --trace "$PHILLY" --format xml

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
