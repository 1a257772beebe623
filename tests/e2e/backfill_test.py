"""Backfill with reservations on a live pool (simulated GPUs, real processes), against the same
scenario without it.

Two 8-GPU nodes. Twelve 1-GPU jobs with a 20 s limit run (they end after 14 s); a 16-GPU job
(2 x 8, limit 10 s) is submitted behind them under strict FIFO (`fifo-strict/fifo`), then a
stream of short 1-GPU jobs (limit 4 s, 3 s of work), one every 0.5 s.

- `--backfill easy`: the big job gets a reservation (`explain` shows where and when: when the
  running jobs' limits end); it starts no later than that; short jobs whose limits end before
  it run meanwhile on the 4 free GPUs; none started after the big job's reservation minus its
  limit would overlap it.
- without backfill: the same scenario leaves the 4 GPUs idle until the big job starts.
The GPU-seconds used while the big job waited are reported for both."""
import datetime
import re
import sys
import time

from pool import Checks, Pool

LONG_S, LONG_LIMIT, SHORT_S, SHORT_LIMIT = 14, "20s", 3, "4s"


def job(pool, jid):
    return pool.call("GET", f"/v1/jobs/{jid}")[1]


def scenario(gpupool, c, backfill):
    name = "backfill" if backfill else "no backfill"
    pool = Pool(gpupool)
    try:
        extra = ["--policy", "fifo-strict/fifo"] + (["--backfill", "easy"] if backfill else [])
        pool.start_server(*extra)
        pool.start_agent("n1", "8xH100")
        pool.start_agent("n2", "8xH100")
        pool.wait_nodes(2)

        def submit(seconds, gpus, limit, tasks=1):
            s, body = pool.call("POST", "/v1/jobs", {"command": ["sleep", str(seconds)], "gpus": gpus, "tasks": tasks,
                                                     "time": limit})
            if s != 201:
                raise RuntimeError(f"submit: {s} {body}")
            return body["id"]

        longs = [submit(LONG_S, 1, LONG_LIMIT) for _ in range(12)]
        deadline = time.time() + 15
        while time.time() < deadline and not all(job(pool, j)["state"] == "running" for j in longs):
            time.sleep(0.1)
        big = submit(5, 8, "10s", tasks=2)
        time.sleep(0.5)
        reserved_ms = None
        s, ex = pool.call("GET", f"/v1/jobs/{big}/explain")
        text = ex.get("explain", "") if isinstance(ex, dict) else ""
        m = re.search(r"reservation: starts by (\S+) \(in [^)]*\) on (.*);", text)
        if backfill:
            c.check(m is not None and "n1" in m.group(2) and "n2" in m.group(2),
                    f"{name}: explain shows the big job's reservation, where and when: {text!r}")
            if m:
                when = datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc)
                reserved_ms = int(when.timestamp() * 1000)
                long_end = max(job(pool, j)["start_ms"] for j in longs) + 20_000
                c.check(abs(reserved_ms - long_end) <= 1, f"{name}: reserved for when the running jobs' limits end "
                        f"({reserved_ms} against {long_end})")
        else:
            c.check(m is None, f"{name}: no reservation without backfill")
        shorts = []
        t_end = time.time() + LONG_S + 2
        while time.time() < t_end:
            shorts.append(submit(SHORT_S, 1, SHORT_LIMIT))
            time.sleep(0.5)
        deadline = time.time() + 40
        while time.time() < deadline and job(pool, big)["state"] not in ("succeeded", "failed"):
            time.sleep(0.2)
        b = job(pool, big)
        c.check(b["state"] == "succeeded", f"{name}: the big job ran ({b['state']}, {b['message']!r})")
        for j in shorts:
            pool.call("POST", f"/v1/jobs/{j}/cancel")
        jobs = {j: job(pool, j) for j in shorts}
        big_start = b["start_ms"]
        # Short jobs that started while the big job waited, and the GPU-seconds they used then.
        before = [j for j in jobs.values() if 0 < j["start_ms"] < big_start]
        used = sum(min(j["end_ms"] or big_start, big_start) - j["start_ms"] for j in before) / 1000
        if backfill:
            c.check(reserved_ms is not None and big_start <= reserved_ms,
                    f"{name}: the big job started no later than its reservation ({big_start} <= {reserved_ms})")
            c.check(len(before) >= 8, f"{name}: short jobs ran in the hole ({len(before)})")
            late = [j for j in before if reserved_ms is not None and j["start_ms"] + 4_000 > reserved_ms]
            c.check(not late, f"{name}: none whose limit ran past the reservation started before it ({len(late)})")
        else:
            c.check(not before, f"{name}: nothing ran in the hole: {len(before)} short jobs started before the big one")
        wait_s = (big_start - b["submit_ms"]) / 1000
        # The whole pool's use while the big job waited: every job's GPU-time within the wait.
        every = list(jobs.values()) + [job(pool, j) for j in longs]
        busy = sum(max(0, min(j["end_ms"] or big_start, big_start) - max(j["start_ms"], b["submit_ms"]))
                   for j in every if j["start_ms"] > 0) / 1000
        share = busy / (16 * wait_s)
        print(f"{name}: the 16-GPU job waited {wait_s:.1f} s (reservation {'kept' if backfill else 'none'}); short jobs "
              f"used {used:.1f} GPU-s meanwhile; the pool's 16 GPUs were {100 * share:.0f}% busy while it waited", flush=True)
        return share
    finally:
        pool.stop()


def main(gpupool):
    c = Checks()
    with_bf = scenario(gpupool, c, True)
    without = scenario(gpupool, c, False)
    print(f"GPUs busy while the 16-GPU job waited: {100 * with_bf:.0f}% with backfill, {100 * without:.0f}% without",
          flush=True)
    return c.done()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "build/gpupool"))
