"""Time limits (Slurm's --time) on a live pool with simulated GPUs, through the CLI.

A job past its limit gets SIGTERM, then SIGKILL after the agent's grace (5 s) if it ignores
it, and ends `timed-out` (its own state, as Slurm's TIMEOUT), and its GPUs go to the job that
waited for them. A job that finishes in time succeeds. Slurm's spellings are taken
(`--time 0:03` is 3 seconds as MM:SS); a malformed limit is refused naming the field."""
import subprocess
import sys
import time

from pool import Checks, Pool


def main(gpupool):
    c = Checks()
    pool = Pool(gpupool)
    try:
        pool.start_server()
        pool.start_agent("n1", "2xH100")
        pool.wait_nodes(1)
        conn = ["--server", f"127.0.0.1:{pool.port}", "--token", pool.token]

        def submit(*args):
            r = subprocess.run([gpupool, "submit", *conn, *args], capture_output=True, text=True)
            if r.returncode != 0:
                raise RuntimeError(f"submit {args}: {r.stderr}")
            return r.stdout.strip().split()[-1]

        polite = submit("--gpus", "1", "--time", "0:03", "--", "sleep", "60")
        stubborn = submit("--gpus", "1", "--time", "2s", "--", "sh", "-c", "trap '' TERM; echo started; sleep 60")
        waiting = submit("--gpus", "2", "--", "sleep", "0.5")
        quick = None
        t0 = time.time()
        jobs = pool.wait_jobs([polite, stubborn], timeout=30)
        for jid, want_signal, within in ((polite, 15, (2.5, 6)), (stubborn, 9, (6.5, 12))):
            j = jobs[jid]
            ran = (j["end_ms"] - j["start_ms"]) / 1000 if j["start_ms"] else None
            c.check(j["state"] == "timed-out", f"job {jid} ends timed-out: {j['state']} ({j['message']})")
            c.check(j.get("signal") == want_signal, f"job {jid} ended by signal {want_signal}: {j.get('signal')}")
            c.check(ran is not None and within[0] <= ran <= within[1], f"job {jid} ran {ran} s (expected {within})")
        c.check("time limit" in jobs[polite]["message"], f"the message says why: {jobs[polite]['message']}")
        done = pool.wait_jobs([waiting], timeout=20)
        c.check(done[waiting]["state"] == "succeeded", f"their GPUs went to the job that waited: {done[waiting]['state']}")
        quick = submit("--gpus", "1", "--time", "1-00:00:00", "--", "true")
        done = pool.wait_jobs([quick], timeout=20)
        c.check(done[quick]["state"] == "succeeded", f"a job within its limit succeeds: {done[quick]['state']}")
        s, body = pool.call("POST", "/v1/jobs", {"command": ["true"], "time": "1:2:3:4"})
        c.check(s == 400 and "time" in str(body) and "D-HH:MM:SS" in str(body), f"a malformed limit names the field: {s} {body}")
        s, body = pool.call("POST", "/v1/jobs", {"command": ["true"], "time": "0s"})
        c.check(s == 400 and "field 'time'" in str(body), f"a zero limit is refused: {s} {body}")
        # A tenant's default and maximum (Slurm's DefaultTime and MaxTime).
        r = subprocess.run([gpupool, "tenant", "create", "batch", "--default-time", "0:30:00", "--max-time", "2h", *conn],
                           capture_output=True, text=True)
        c.check(r.returncode == 0, f"tenant with time limits: {r.stdout}{r.stderr}")
        tok = subprocess.run([gpupool, "token", "create", "--tenant", "batch", *conn], capture_output=True, text=True).stdout.strip()
        s, body = pool.call("POST", "/v1/jobs", {"command": ["true"], "time": "3h"}, token=tok)
        c.check(s == 400 and "is over tenant batch's maximum of 2h" in str(body), f"over the tenant's maximum: {s} {body}")
        s, body = pool.call("POST", "/v1/jobs", {"command": ["true"]}, token=tok)
        c.check(s == 201, f"a job without a limit is accepted: {s} {body}")
        if s == 201:
            j = pool.call("GET", f"/v1/jobs/{body['id']}")[1]
            c.check(j.get("time_limit_ms") == 1_800_000, f"and gets the tenant's default of 30 minutes: {j.get('time_limit_ms')}")
        r = subprocess.run([gpupool, "jobs", *conn, "--state", "timed-out"], capture_output=True, text=True)
        c.check(r.returncode == 0 and polite in r.stdout and stubborn in r.stdout,
                f"`gpupool jobs --state timed-out` lists them: {r.stdout}{r.stderr}")
        print(f"ran {time.time() - t0:.1f} s", flush=True)
    finally:
        pool.stop()
    return c.done()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
