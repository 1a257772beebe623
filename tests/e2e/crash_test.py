"""The server is killed with SIGKILL twice, at seeded random points of progress, while a client submits
1,000 jobs as fast as it can (retrying when the server is away). Every acknowledged job must
finish exactly once: each job appends its own id to a file, so a job run twice, or never,
shows. No GPU may be double-booked across the restarts: jobs that overlapped in time on a node
never shared a GPU. Unacknowledged submits (the server died before answering) may or may not
exist."""
import os
import random
import sys
import threading
import time

from pool import Checks, Pool


def main(gpupool):
    c = Checks()
    rng = random.Random(7)
    pool = Pool(gpupool)
    try:
        pool.start_server()
        pool.start_agent("one", "4xH100")
        pool.start_agent("two", "4xH100")
        pool.wait_nodes(2)
        out = os.path.join(pool.dir, "ran")
        pool.shared_dir(out)
        acked = []
        done = threading.Event()

        def submitter():
            for i in range(1000):
                script = (f'echo "$GPUPOOL_JOB_ID" >> {out}/runs; s=$(date +%s.%N); sleep 0.0{i % 3}; '
                          f'echo "$GPUPOOL_NODE;$CUDA_VISIBLE_DEVICES;$s;$(date +%s.%N)" > {out}/use-$GPUPOOL_JOB_ID')
                body = {"command": ["sh", "-c", script],
                        "gpus": i % 2, "name": f"c-{i}"}
                acked.append(pool.submit_retrying(body))
            done.set()

        t = threading.Thread(target=submitter)
        t.start()
        kills = 0
        kill_points = [rng.randint(50, 400), rng.randint(500, 900)]  # acknowledged submits
        while not done.is_set() and kills < 2:
            if len(acked) < kill_points[kills]:
                time.sleep(0.005)
                continue
            pool.kill_server()
            kills += 1
            print(f"killed the server after {len(acked)} acknowledged submits", flush=True)
            time.sleep(rng.uniform(0.1, 0.5))
            pool.start_server()
        t.join()
        c.check(kills == 2, f"the server was killed twice during the burst ({kills})")
        jobs = pool.wait_jobs(acked, timeout=120)
        runs = {}
        for line in open(f"{out}/runs"):
            runs[line.strip()] = runs.get(line.strip(), 0) + 1
        for jid in acked:
            c.check(jobs.get(jid, {}).get("state") == "succeeded", f"job {jid}: {jobs.get(jid, {}).get('state')}")
            c.check(runs.get(jid, 0) == 1, f"job {jid} ran {runs.get(jid, 0)} times")
        uses = []
        for jid in acked:
            path = f"{out}/use-{jid}"
            if os.path.exists(path):
                node, gpus, start, end = open(path).read().strip().split(";")
                if gpus:
                    uses.append((node, set(gpus.split(",")), float(start), float(end), jid))
        shared = 0
        for a in range(len(uses)):
            for b in range(a + 1, len(uses)):
                na, ga, sa, ea, ja = uses[a]
                nb, gb, sb, eb, jb = uses[b]
                if na == nb and sa < eb and sb < ea and ga & gb:
                    shared += 1
                    c.check(False, f"jobs {ja} and {jb} shared GPU {ga & gb} on {na} at the same time")
        c.check(len(uses) > 0, "GPU jobs recorded their GPUs")
        print(f"{len(uses)} GPU jobs checked pairwise: {shared} double-booked", flush=True)
        print(f"{len(acked)} acknowledged, {sum(1 for j in acked if runs.get(j) == 1)} ran exactly once; "
              f"{len(runs)} distinct jobs ran", flush=True)
    finally:
        pool.stop()
    return c.done()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
