"""Dependencies (Slurm's --dependency) on a live pool, and the same log replayed by the simulator.

- A, then B afterok A, then C afterany B (`gpupool submit -d`): they run in that order.
- A failing: B ends cancelled saying its dependency can never be met; C runs after it.
- While B waits, `explain` says for what; across a server restart it still waits, then runs.
- A dependency on a job that does not exist is refused naming the field.
- singleton: two jobs of one name run one after the other.
- The pool's event log, replayed by `gpupool sim --trace-format events`, holds the same order:
  in the simulated log B starts after A ended, the failed chain's B is cancelled again and C
  starts after that."""
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from pool import Checks, Pool  # noqa: E402


def submit(pool, *args):
    """`gpupool submit ARGS` (flags before the job's `--`)."""
    r = subprocess.run([pool.gpupool, "submit", "--server", f"127.0.0.1:{pool.port}", "--token", pool.token, *args],
                       capture_output=True, text=True)
    return r.stdout.strip(), r


def main():
    gpupool = os.path.abspath(sys.argv[1])
    c = Checks()
    pool = Pool(gpupool)
    try:
        pool.start_server()
        pool.start_agent("n1", "4xH100")
        pool.wait_nodes(1)
        # --- a chain that succeeds, across a restart ---
        a, _ = submit(pool, "--name", "a", "--", "sh", "-c", "sleep 2")
        b, _ = submit(pool, "--name", "b", "-d", f"afterok:{a}", "--", "true")
        cc, _ = submit(pool, "--name", "c", "--dependency", f"afterany:{b}", "--", "true")
        time.sleep(0.5)
        r = pool.cli("explain", b)
        c.check("waiting for its dependencies" in r.stdout and f"afterok:{a}" in r.stdout,
                f"explain says what B waits for: {r.stdout.strip()[:200]}")
        job_b = pool.call("GET", f"/v1/jobs/{b}")[1]
        c.check(job_b["state"] == "queued" and job_b.get("dependency") == f"afterok:{a}",
                f"B is queued with its dependency shown: {job_b['state']}, {job_b.get('dependency')}")
        pool.stop_server()
        pool.start_server()
        c.check(pool.call("GET", f"/v1/jobs/{b}")[1]["state"] == "queued", "after a restart B still waits")
        jobs = pool.wait_jobs([a, b, cc], timeout=60)
        c.check(all(jobs[i]["state"] == "succeeded" for i in (a, b, cc)), f"A, B, C succeeded: {[jobs[i]['state'] for i in (a, b, cc)]}")
        c.check(jobs[a]["end_ms"] <= jobs[b]["start_ms"] and jobs[b]["end_ms"] <= jobs[cc]["start_ms"],
                f"in order: A ended {jobs[a]['end_ms']}, B ran {jobs[b]['start_ms']}..{jobs[b]['end_ms']}, C started {jobs[cc]['start_ms']}")

        # --- a chain whose head fails ---
        a2, _ = submit(pool, "--name", "a2", "--", "sh", "-c", "sleep 1; exit 3")
        b2, _ = submit(pool, "--name", "b2", "-d", f"afterok:{a2}", "--", "true")
        c2, _ = submit(pool, "--name", "c2", "-d", f"afterany:{b2}", "--", "true")
        jobs = pool.wait_jobs([a2, b2, c2], timeout=60)
        c.check(jobs[a2]["state"] == "failed", f"A2 failed ({jobs[a2]['state']})")
        c.check(jobs[b2]["state"] == "cancelled" and f"afterok:{a2} can never be met: job {a2} failed" in jobs[b2]["message"],
                f"B2 ended, saying why: {jobs[b2]['state']}: {jobs[b2]['message']}")
        c.check(jobs[c2]["state"] == "succeeded" and jobs[c2]["start_ms"] >= jobs[b2]["end_ms"],
                f"C2 ran after B2 ended ({jobs[c2]['state']})")

        # --- refused, and singletons ---
        out, r = submit(pool, "-d", "afterok:9999", "--", "true")
        c.check(r.returncode != 0 and "dependency" in r.stderr and "9999" in r.stderr, f"a dependency on no job is refused: {r.stderr.strip()}")
        out, r = submit(pool, "-d", "before:1", "--", "true")
        c.check(r.returncode != 0 and "dependency" in r.stderr, f"an unknown kind is refused: {r.stderr.strip()}")
        s1, _ = submit(pool, "--name", "nightly", "-d", "singleton", "--", "sh", "-c", "sleep 1")
        s2, _ = submit(pool, "--name", "nightly", "-d", "singleton", "--", "true")
        jobs = pool.wait_jobs([s1, s2], timeout=60)
        c.check(jobs[s1]["end_ms"] <= jobs[s2]["start_ms"], "two singletons of one name ran one after the other")

        # --- the log, replayed by the simulator ---
        log = os.path.join(pool.dir, "events.ndjson")
        with open(log, "w") as f:
            for e in pool.all_events():
                f.write(json.dumps(e) + "\n")
        sim_log = os.path.join(pool.dir, "sim.ndjson")
        r = subprocess.run([gpupool, "sim", "--fleet", "1x4xH100", "--trace", log, "--trace-format", "events", "--events", sim_log,
                            "--format", "json"], capture_output=True, text=True, timeout=120)
        c.check(r.returncode == 0, f"the simulator replays the log: {r.stderr.strip()[:200]}")
        report = json.loads(r.stdout) if r.returncode == 0 else {}
        report = report[0] if isinstance(report, list) else report
        c.check(report.get("cancelled") == 1, f"the replay cancels B2 again: {report.get('cancelled')}")
        events = [json.loads(line) for line in open(sim_log)] if os.path.exists(sim_log) else []
        by_name = {}
        for e in events:
            by_name.setdefault(e["data"].get("name"), []).append(e)

        def first(name, kind):
            return next((i for i, e in enumerate(events) if e["data"].get("name") == name and e["type"] == f"io.gpupool.job.{kind}"), None)

        order_ok = (first("a", "succeeded") is not None and first("b", "placed") is not None and
                    first("a", "succeeded") < first("b", "placed") and first("b", "succeeded") < first("c", "placed"))
        c.check(order_ok, "in the simulated log B starts after A ended, and C after B")
        c.check(first("a2", "failed") is not None and first("b2", "cancelled") is not None and first("b2", "placed") is None
                and first("b2", "cancelled") < first("c2", "placed"),
                "in the simulated log A2 fails, B2 is cancelled without running, and C2 starts after")
    finally:
        pool.stop()
    return c.done()


if __name__ == "__main__":
    sys.exit(main())
