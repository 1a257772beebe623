"""Server outages are not job failures: kill -9 the server while 20 jobs run, and start it again
after 5 s, then again after 60 s (the jobs end meanwhile). Every job keeps running through the
outages and ends once, with its own exit code, on its first attempt. (An agent cut off from a
live server still stops its attempts within its lease: fault_test's network cut.)"""
import os
import sys
import time

from pool import Checks, Pool

JOBS = 20


def main(gpupool, long_outage=60):
    c = Checks()
    pool = Pool(gpupool)
    try:
        pool.start_server()
        out = pool.shared_dir(os.path.join(pool.dir, "runs"))
        pool.start_agent("alpha", "10xH100")
        pool.start_agent("beta", "10xH100")
        pool.wait_nodes(2)
        ids = {}
        for i in range(JOBS):
            # Each start appends a line (a second start would leave two); ends during the long outage.
            script = f"echo start >> {out}/{i}.runs; sleep 25; echo done; exit {i % 5}"
            ids[pool.submit(["sh", "-c", script], gpus=1, name=f"o-{i}")] = i
        deadline = time.time() + 30
        while time.time() < deadline:
            status, body = pool.call("GET", "/v1/jobs?state=running&limit=1000")
            if status == 200 and len(body["jobs"]) == JOBS:
                break
            time.sleep(0.2)
        c.check(len(body["jobs"]) == JOBS, f"{JOBS} jobs running before the outages ({len(body['jobs'])})")
        for outage in (5, long_outage):
            pool.kill_server()
            time.sleep(outage)
            pool.start_server()
            time.sleep(2)
            jobs = {j["id"]: j for j in pool.all_jobs()}
            lost = [f"{i}:{jobs[i]['state']}/{jobs[i]['attempt']}" for i in ids if jobs[i]["attempt"] != 1
                    or jobs[i]["state"] not in ("running", "succeeded", "failed")]
            c.check(not lost, f"after a {outage} s outage every job is on its first attempt ({lost})")
        final = pool.wait_jobs(list(ids), timeout=60)
        for jid, i in ids.items():
            j = final[jid]
            want = "succeeded" if i % 5 == 0 else "failed"
            c.check(j["exit_code"] == i % 5 and j["state"] == want and j["attempt"] == 1,
                    f"job {jid} ended {j['state']} with {j['exit_code']} on attempt {j['attempt']}, want {want} with {i % 5} "
                    f"on 1 ({j['message']})")
            n = len(open(f"{out}/{i}.runs").read().splitlines()) if os.path.exists(f"{out}/{i}.runs") else 0
            c.check(n == 1, f"job {jid} started {n} times")
            status, text = pool.call("GET", f"/v1/jobs/{jid}/logs?task=0&stream=stdout")
            c.check(status == 200 and "done" in text, f"job {jid} kept its log ({text!r})")
        downs = [e for e in pool.all_events() if e["type"] == "io.gpupool.node.down"]
        c.check(not downs, f"no node was declared down ({len(downs)})")
    finally:
        pool.stop()
    return c.done()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], *(int(x) for x in sys.argv[2:])))
