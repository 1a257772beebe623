"""A live pool's history replayed by the simulator. A small pool (three nodes of 4 simulated
H100s, the fifo policy) runs jobs of mixed shapes, some of which must wait for others: single
GPUs, two and four GPUs, a gang of two tasks, CPU-only work. Its event log (`gpupool events
--json`) is then given to `gpupool sim --trace` on the same fleet with fifo, with `--events` to
see where the simulator put each job. Every job must land on the same nodes and the same GPUs
as it did live, and start within the pool's launch latency of its live start (the longest time
from its GPUs being there to its placement, plus the longest from placement to running)."""
import json
import subprocess
import sys
import time
from datetime import datetime

from pool import Checks, Pool

# (name, gpus, tasks, seconds it runs, seconds after the previous submission)
JOBS = [
    ("whole-node", 4, 1, 2.0, 0.0),
    ("pair", 2, 1, 1.0, 0.15),
    ("single", 1, 1, 3.0, 0.15),
    ("gang", 2, 2, 1.6, 0.15),
    ("cpu", 0, 1, 0.6, 0.15),
    ("waits-for-a-node", 4, 1, 1.0, 0.15),   # none free: runs when node-2 empties
    ("second-pair", 2, 1, 1.2, 0.15),        # behind it in fifo order
    ("late-single", 1, 1, 0.8, 3.2),         # after the first wave has drained
    ("late-gang", 4, 2, 1.0, 0.15),
]


def ms(t):
    return datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp() * 1000


def by_job(events):
    """name -> {type: (time_ms, data)} (the last of each type)."""
    names, out = {}, {}
    for e in events:
        if not e["type"].startswith("io.gpupool.job."):
            continue
        d = e["data"]
        what = e["type"][len("io.gpupool.job."):]
        if what == "submitted":
            names[d["id"]] = d["name"]
        name = names.get(d["id"], d.get("name"))
        out.setdefault(name, {})[what] = (ms(e["time"]), d)
    return out


def main(gpupool):
    c = Checks()
    pool = Pool(gpupool)
    try:
        pool.start_server("--policy", "fifo")
        for i in (1, 2, 3):  # registered in order: node ids as in the fleet `3x4xH100`
            pool.start_agent(f"node-{i}", "4xH100", interval="100ms")
            pool.wait_nodes(i)
        ids = []
        for name, gpus, tasks, secs, gap in JOBS:
            time.sleep(gap)
            ids.append(pool.submit(["sleep", str(secs)], gpus=gpus, tasks=tasks, name=name))
        final = pool.wait_jobs(ids, timeout=60)
        c.check(all(j["state"] == "succeeded" for j in final.values()), "every live job succeeded")
        log = f"{pool.dir}/events.ndjson"
        with open(log, "w") as f:
            subprocess.run([gpupool, "events", "--json", "--server", f"127.0.0.1:{pool.port}", "--token", pool.token],
                           stdout=f, check=True, timeout=30)
        sim_events = f"{pool.dir}/replayed.ndjson"
        r = subprocess.run([gpupool, "sim", "--fleet", "3x4xH100", "--trace", log, "--policy", "fifo", "--events", sim_events,
                            "--format", "json"], capture_output=True, text=True, timeout=60)
        c.check(r.returncode == 0, f"gpupool sim --trace takes the event log ({r.stderr.strip()})")
        report = json.loads(r.stdout) if r.returncode == 0 else {}
        c.check(report.get("finished") == len(JOBS), f"the replay runs every job ({report.get('finished')}/{len(JOBS)})")
        live = by_job(pool.all_events())
        sim = by_job([json.loads(line) for line in open(sim_events) if line.strip()])
        t0_live = min(v["submitted"][0] for v in live.values())
        # The pool's launch latency: from the moment a job's GPUs are there (its submission, or
        # the end of the job that freed them) to its placement, at its longest, plus from
        # placement to running, at its longest.
        ends = sorted(v[k][0] for v in live.values() for k in ("succeeded", "failed") if k in v)
        decide = 0
        for n, v in live.items():
            if n not in sim:
                continue
            if sim[n]["started"][0] == sim[n]["submitted"][0]:
                decide = max(decide, v["placed"][0] - v["submitted"][0])
            else:
                freed = max([t for t in ends if t <= v["placed"][0]], default=v["submitted"][0])
                decide = max(decide, v["placed"][0] - freed)
        start = max(v["started"][0] - v["placed"][0] for v in live.values())
        # Each of the two parts is read from whole-millisecond event times, so each may be short
        # by up to a millisecond: the tolerance allows for that resolution.
        latency = decide + start + 2
        print(f"launch latency of the live pool: {latency:.0f} ms (deciding {decide:.0f} ms, starting {start:.0f} ms)", flush=True)
        for name, *_ in JOBS:
            lv, sv = live.get(name, {}), sim.get(name, {})
            if "placed" not in lv or "placed" not in sv or "started" not in sv:
                c.check(False, f"{name}: placed live and in the replay")
                continue
            where_live = (lv["placed"][1]["nodes"], lv["placed"][1]["gpus"])
            where_sim = (sv["placed"][1]["nodes"], sv["placed"][1]["gpus"])
            c.check(where_live == where_sim, f"{name}: same nodes and GPUs (live {where_live}, replay {where_sim})")
            start_live = lv["started"][0] - t0_live
            start_sim = sv["started"][0]  # the replay's clock starts at the first submission
            c.check(abs(start_sim - start_live) <= latency,
                    f"{name}: starts within the launch latency ({latency:.0f} ms) of its live start "
                    f"(live {start_live:.0f} ms, replay {start_sim:.0f} ms)")
            print(f"{name:18} {str(where_live):40} live {start_live:6.0f} ms  replay {start_sim:6.0f} ms", flush=True)
        waited = [n for n in sim if sim[n]["started"][0] > sim[n]["submitted"][0]]
        c.check(len(waited) >= 2, f"some jobs waited for others, in both ({waited})")
    finally:
        pool.stop()
    return c.done()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
