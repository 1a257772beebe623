#!/usr/bin/env bash
# A real CUDA job through the live pool: `gpupool server`, `gpupool agent` on the GPU machine
# (GPUs from NVML), `gpupool submit`. Usage: tools/gpu-validation/pool.sh GPUPOOL OUT_DIR
set -u
GP=$1
OUT=$2
HERE=$(cd "$(dirname "$0")" && pwd)
D=$(mktemp -d)
mkdir -p "$OUT"
nvcc -O2 -arch=sm_90 -o /tmp/cuda_job "$HERE/cuda_job.cu" || exit 1
"$GP" server --listen 127.0.0.1:7070 --data-dir "$D/server" >"$OUT/server.log" 2>&1 &
srv=$!
sleep 1
"$GP" agent --server 127.0.0.1:7070 --join-token-file "$D/server/join.token" --name gpu-node \
  --work-dir "$D/agent" >"$OUT/agent.log" 2>&1 &
agent=$!
export GPUPOOL_ADDR=127.0.0.1:7070 GPUPOOL_TOKEN=$(cat "$D/server/admin.token")
sleep 1.5
echo "== gpupool nodes"; "$GP" nodes
"$GP" node gpu-node --json >"$OUT/node_idle.json"
echo "== submit a CUDA job (1 GPU, 12 s, 8 GiB)"
id=$("$GP" submit --gpus 1 --gpu-model H200 --name cuda-burn -- /tmp/cuda_job 12 8192)
echo "job $id"
sleep 4
echo "== while it runs"; "$GP" jobs; "$GP" nodes
"$GP" node gpu-node --json >"$OUT/node_busy.json"
echo "== a 2-GPU job on a 1-GPU node"; id2=$("$GP" submit --gpus 2 -- true); sleep 0.5; "$GP" explain "$id2"
"$GP" wait "$id"; rc=$?
echo "gpupool wait exit code: $rc"
echo "== logs"; "$GP" logs "$id" | tee "$OUT/job.log"
"$GP" job "$id" --json >"$OUT/job.json"
kill $agent $srv; wait 2>/dev/null
python3 - "$OUT" "$rc" <<'PY'
import json, sys
out, rc = sys.argv[1], int(sys.argv[2])
idle, busy = json.load(open(f"{out}/node_idle.json")), json.load(open(f"{out}/node_busy.json"))
job, log = json.load(open(f"{out}/job.json")), open(f"{out}/job.log").read()
uuid = idle["gpus"][0]["uuid"]
util = busy["gpus"][0]["load"]["utilisation"]
mem = busy["gpus"][0]["load"]["memory_used_mib"]
print("node GPU via NVML:", idle["gpus"][0]["name"], uuid, idle["gpu_source"])
print("GPU load in the API while the job ran: utilisation", util / 10, "% memory used", mem, "MiB")
checks = {"agent used NVML": idle["gpu_source"] == "nvml",
          "job succeeded with exit code 0": job["state"] == "succeeded" and job["exit_code"] == 0 and rc == 0,
          "job was given GPU 0": job["gpus"] == [0],
          "CUDA_VISIBLE_DEVICES=0 inside the job": "CUDA_VISIBLE_DEVICES=0 " in log,
          "the job's GPU UUID is the node's": f"uuid={uuid}" in log,
          "kernel result ok": "result=ok" in log,
          "live NVML load reached the API (> 50%)": util > 500,
          "memory in use reached the API (> 4 GiB)": mem > 4096}
for k, v in checks.items(): print(("PASS " if v else "FAIL ") + k)
sys.exit(0 if all(checks.values()) else 1)
PY
