"""End to end: a server and two agents as separate processes on loopback. 50 jobs of mixed GPU
counts record CUDA_VISIBLE_DEVICES and their start and end times; no two jobs that overlapped in
time may have shared a GPU, and every job must end with its own exit code."""
import os
import sys

from pool import Checks, Pool


def main(gpupool):
    c = Checks()
    pool = Pool(gpupool)
    try:
        pool.start_server()
        pool.start_agent("alpha", "4xH100")
        pool.start_agent("beta", "8xA100")
        pool.wait_nodes(2)
        out = os.path.join(pool.dir, "records")
        pool.shared_dir(out)
        gpu_counts = [0, 1, 2, 3, 4, 8, 1, 2, 1, 4]
        expected = {}
        for i in range(50):
            gpus = gpu_counts[i % len(gpu_counts)]
            code = i % 4  # 0 succeeds; 1, 2, 3 fail with that code
            script = (f'echo "$GPUPOOL_NODE;$CUDA_VISIBLE_DEVICES;$(date +%s.%N)" > {out}/{i}.start; '
                      f'sleep 0.{(i * 7) % 5}; date +%s.%N > {out}/{i}.end; exit {code}')
            jid = pool.submit(["sh", "-c", script], gpus=gpus, name=f"e2e-{i}")
            expected[jid] = (i, gpus, code)
        jobs = pool.wait_jobs(list(expected), timeout=120)
        runs = []
        for jid, (i, gpus, code) in expected.items():
            j = jobs[jid]
            c.check(j["exit_code"] == code, f"job {jid} exit code {j['exit_code']}, want {code}")
            c.check(j["state"] == ("succeeded" if code == 0 else "failed"), f"job {jid} state {j['state']}")
            c.check(len(j["gpus"]) == gpus, f"job {jid} got {len(j['gpus'])} GPUs, asked {gpus}")
            if not os.path.exists(f"{out}/{i}.start") or not os.path.exists(f"{out}/{i}.end"):
                c.check(False, f"job {jid} left no start/end record")
                continue
            node, visible, start = open(f"{out}/{i}.start").read().strip().split(";")
            end = float(open(f"{out}/{i}.end").read())
            seen = sorted(int(g) for g in visible.split(",") if g)
            c.check(seen == sorted(j["gpus"]), f"job {jid}: CUDA_VISIBLE_DEVICES={visible} but the API says {j['gpus']}")
            c.check(node == j["node"], f"job {jid} ran on {node}, API says {j['node']}")
            if gpus == 8:
                c.check(node == "beta", f"job {jid} asked 8 GPUs but ran on {node}")
            runs.append((node, set(seen), float(start), end, jid))
        overlaps = 0
        for a in range(len(runs)):
            for b in range(a + 1, len(runs)):
                na, ga, sa, ea, ja = runs[a]
                nb, gb, sb, eb, jb = runs[b]
                if na == nb and sa < eb and sb < ea:
                    overlaps += 1
                    c.check(not (ga & gb), f"jobs {ja} and {jb} overlapped on {na} and shared GPUs {ga & gb}")
        c.check(overlaps > 0, "some jobs ran at the same time (the test exercises sharing a node)")
        status, body = pool.call("GET", f"/v1/jobs/{next(iter(expected))}/logs?task=0&stream=stdout")
        c.check(status == 200, "logs endpoint answers")
    finally:
        pool.stop()
    return c.done()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
