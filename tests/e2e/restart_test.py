"""Restart: kill -9 the server mid-run and start it again on the same data directory. Every
acknowledged job is still there, running jobs are adopted back from the agent (each started
exactly once), and the queue carries on to the end."""
import os
import sys
import time

from pool import Checks, Pool


def main(gpupool):
    c = Checks()
    pool = Pool(gpupool)
    try:
        pool.start_server()
        pool.start_agent("solo", "4xV100")
        pool.wait_nodes(1)
        out = os.path.join(pool.dir, "runs")
        pool.shared_dir(out)
        ids = []
        for i in range(16):
            # Each start appends a line: a job started twice would leave two.
            script = f'echo start >> {out}/{i}.runs; sleep 1.5; echo done'
            ids.append(pool.submit(["sh", "-c", script], gpus=1, name=f"r-{i}"))
        time.sleep(0.8)  # four run, twelve wait
        status, body = pool.call("GET", "/v1/jobs?state=running")
        running_before = {j["id"] for j in body["jobs"]}
        c.check(len(running_before) == 4, f"4 jobs running before the crash, got {len(running_before)}")
        pool.kill_server()
        time.sleep(1.0)  # the agent keeps its tasks running while the server is away
        pool.start_server()
        # Acknowledged jobs submitted right after the restart join the same queue.
        ids.append(pool.submit(["sh", "-c", f"echo start >> {out}/late.runs"], gpus=1, name="late"))
        jobs = pool.wait_jobs(ids, timeout=60)
        for i, jid in enumerate(ids):
            c.check(jid in jobs, f"job {jid} survived the restart")
            c.check(jobs.get(jid, {}).get("state") == "succeeded",
                    f"job {jid} ended {jobs.get(jid, {}).get('state')} ({jobs.get(jid, {}).get('message')})")
        for i in range(16):
            path = f"{out}/{i}.runs"
            n = len(open(path).read().splitlines()) if os.path.exists(path) else 0
            c.check(n == 1, f"job r-{i} started {n} times")
        for jid in running_before:
            status, text = pool.call("GET", f"/v1/jobs/{jid}/logs?task=0&stream=stdout")
            c.check(status == 200 and "done" in text, f"job {jid} (adopted) kept its log: {text!r}")
    finally:
        pool.stop()
    return c.done()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
