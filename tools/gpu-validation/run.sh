#!/usr/bin/env bash
# GPU validation for gpupool on a machine with an NVIDIA GPU (see docs/gpu-validation.md).
# Usage: tools/gpu-validation/run.sh GPUPOOL_BINARY OUT_DIR
# 1. `gpupool probe --gpus nvml` reports the real GPUs (NVML loaded at run time).
# 2. `gpupool place --fleet local` (the node read through NVML) chooses a GPU.
# 3. A real CUDA job runs with CUDA_VISIBLE_DEVICES set to that choice, while `gpupool probe`
#    samples NVML: utilisation and memory must rise, and the job must see exactly that GPU.
set -u
GP=$1
OUT=$2
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$OUT"
echo "== nvidia-smi"; nvidia-smi -L; nvidia-smi --query-gpu=name,uuid,memory.total,driver_version --format=csv
echo "== probe (idle)"; "$GP" probe --gpus nvml --samples 2 --interval 500ms --json | tee "$OUT/probe_idle.json"
echo "== place on this node"; "$GP" place --fleet local --gpus 1 --policy least-loaded --explain | tee "$OUT/place.txt"
gpu=$(sed -n 's/.*GPUs \[\([0-9,]*\)\].*/\1/p' "$OUT/place.txt" | head -1)
echo "gpupool chose GPU index: $gpu"
echo "== build the CUDA job"; nvcc --version | tail -1
nvcc -O2 -arch=sm_90 -o /tmp/cuda_job "$HERE/cuda_job.cu" || exit 1
echo "== run it on the chosen GPU, probing NVML meanwhile"
CUDA_VISIBLE_DEVICES=$gpu /tmp/cuda_job 12 8192 >"$OUT/cuda_job.txt" 2>&1 &
job=$!
sleep 2
"$GP" probe --gpus nvml --samples 8 --interval 1s --json >"$OUT/probe_busy.json"
wait $job; rc=$?
cat "$OUT/cuda_job.txt"; echo "cuda_job exit code: $rc"
python3 - "$OUT" "$gpu" <<'PY'
import json, sys
out, gpu = sys.argv[1], int(sys.argv[2])
idle = json.load(open(f"{out}/probe_idle.json")); busy = json.load(open(f"{out}/probe_busy.json"))
uuid = idle["devices"][gpu]["uuid"]
job = open(f"{out}/cuda_job.txt").read()
util = [s["gpus"][gpu]["utilisation"] for s in busy["samples"]]
mem = [s["gpus"][gpu]["memory_used_mib"] for s in busy["samples"]]
idle_mem = idle["samples"][-1]["gpus"][gpu]["memory_used_mib"]
print("NVML uuid of chosen GPU:", uuid)
print("utilisation while busy:", util, "max", max(util))
print("memory used while busy (MiB):", mem, "idle", idle_mem)
checks = {"job saw the chosen GPU (uuid match)": f"uuid={uuid.lower()}" in job.lower(),
          "job saw exactly one device": "devices_seen=1" in job,
          "job result ok": "result=ok" in job,
          "NVML utilisation rose above 50%": max(util) > 0.5,
          "NVML memory rose by > 4 GiB": max(mem) - idle_mem > 4096}
for k, v in checks.items(): print(("PASS " if v else "FAIL ") + k)
sys.exit(0 if all(checks.values()) else 1)
PY
