#!/usr/bin/env bash
# The GPU self-test and carried checkpoints on a real GPU (see docs/gpu-validation.md).
# Usage: tools/gpu-validation/selftest.sh GPUPOOL OUT_DIR
# 1. `gpupool gpu-selftest` on GPU 0: CUDA driver API loaded at run time, memory patterns
#    written and read back, a PTX kernel JIT-compiled and its every result checked.
# 2. Through the live pool: XID 79 injected on GPU 0 quarantines it; `gpupool gpu check` makes
#    the agent run the built-in self-test (no --gpu-selftest given); the pass returns it.
# 3. A CUDA job that checkpoints to GPUPOOL_CHECKPOINT_DIR is evicted and resumes from what
#    the pool carried (no shared storage: --checkpoint-root is not given).
set -u
GP=$1
OUT=$2
HERE=$(cd "$(dirname "$0")" && pwd)
D=$(mktemp -d)
mkdir -p "$OUT"
echo "== gpupool gpu-selftest --index 0"
"$GP" gpu-selftest --index 0 | tee "$OUT/selftest.txt"; st=${PIPESTATUS[0]}
echo "exit code $st"
"$GP" server --listen 127.0.0.1:7070 --data-dir "$D/server" >"$OUT/server.log" 2>&1 &
srv=$!
sleep 1
"$GP" agent --server 127.0.0.1:7070 --join-token-file "$D/server/join.token" --name gpu-node \
  --work-dir "$D/agent" --checkpoint-sync 500ms >"$OUT/agent.log" 2>&1 &
agent=$!
export GPUPOOL_ADDR=127.0.0.1:7070 GPUPOOL_TOKEN=$(cat "$D/server/admin.token")
sleep 1.5
echo "== XID 79 on GPU 0, then gpupool gpu check"
"$GP" gpu xid gpu-node 0 79
"$GP" node gpu-node --json >"$OUT/node_quarantined.json"
"$GP" gpu check gpu-node 0 | tee "$OUT/check.txt"; ck=${PIPESTATUS[0]}
"$GP" node gpu-node --json >"$OUT/node_checked.json"
echo "== a CUDA job that checkpoints, evicted (drain --evict) and resumed"
nvcc -O2 -arch=sm_90 -o /tmp/cuda_job "$HERE/cuda_job.cu" || exit 1
cat >/tmp/ckpt_job.sh <<'JOB'
#!/bin/sh
D="$GPUPOOL_CHECKPOINT_DIR"; n=$(cat "$D/rounds" 2>/dev/null || echo 0)
echo "attempt $GPUPOOL_ATTEMPT starts at round $n in $D"
while [ "$n" -lt 6 ]; do /tmp/cuda_job 1 1024 | grep -o 'result=[a-z]*'; n=$((n+1)); echo "$n" > "$D/rounds"; done
echo "done after 6 rounds"
JOB
chmod +x /tmp/ckpt_job.sh
id=$("$GP" submit --gpus 1 --name ckpt -- /tmp/ckpt_job.sh)
sleep 4
"$GP" drain gpu-node --evict
sleep 2
"$GP" undrain gpu-node
"$GP" wait "$id"; rc=$?
"$GP" logs "$id" | tee "$OUT/ckpt_job.log"
"$GP" job "$id" --json >"$OUT/ckpt_job.json"
kill $agent $srv; wait 2>/dev/null
python3 - "$OUT" "$st" "$ck" "$rc" <<'PY'
import json, re, sys
out, st, ck, rc = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
q, after = json.load(open(f"{out}/node_quarantined.json")), json.load(open(f"{out}/node_checked.json"))
job, log = json.load(open(f"{out}/ckpt_job.json")), open(f"{out}/ckpt_job.log").read()
starts = [int(x) for x in re.findall(r"attempt \d+ starts at round (\d+)", log)]
print("self-test result in the API:", after["gpus"][0].get("check"))
print("rounds each attempt started from:", starts)
checks = {"gpu-selftest passed on the GPU": st == 0 and "passed" in open(f"{out}/selftest.txt").read(),
          "XID 79 quarantined GPU 0": q["gpus"][0]["health"].startswith("quarantined"),
          "gpu check: the agent's built-in CUDA test passed": ck == 0 and "kernel results checked" in after["gpus"][0].get("check", ""),
          "GPU 0 back in service": after["gpus"][0]["health"] == "ok",
          "the job succeeded on attempt 2": job["state"] == "succeeded" and job["attempt"] == 2 and rc == 0,
          "attempt 2 resumed from the carried checkpoint": len(starts) == 2 and starts[0] == 0 and starts[1] > 0}
for k, v in checks.items(): print(("PASS " if v else "FAIL ") + k)
sys.exit(0 if all(checks.values()) else 1)
PY
