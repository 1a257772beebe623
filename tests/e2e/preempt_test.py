"""Preemption on a live pool (simulated GPUs, real processes, real signals).

1. Priority: three 8-GPU nodes busy with low-priority work (a 2 x 4 gang and 1-GPU jobs that
   save their progress on SIGTERM in GPUPOOL_CHECKPOINT_DIR). A high-priority 2 x 8 gang is
   submitted: it runs within the preemption grace + 2 s; exactly as many jobs were preempted as
   the fewest that free two whole nodes (computed here from where every job ran); the gang
   victim lost both its tasks together (never one of them); every victim went back to the queue
   without a failure counted, said by whom it was preempted, and resumed from its checkpoint
   (on the same node or another) once the gang was done; the preemptions are events.
2. Reclaim within a cohort: tenants a and b have 4 H100 each in cohort lab (8 in all). While a
   is idle b runs 8 jobs (4 borrowed). a submits 3: exactly 3 of b's jobs are preempted (as far
   as a needs), a's 3 run, and b keeps the rest; `explain`-free: the victims' messages name the
   reclaim.
3. A restart during the victims' grace: the job keeps what was held for it and starts there;
   no further job is preempted."""
import itertools
import os
import subprocess
import sys
import time

from pool import Checks, Pool

GRACE_S = 3
# Counts to 400 in 0.1 s steps (40 s), saving its count on SIGTERM; a resumed attempt starts
# from the saved count. Each start appends: attempt, count it resumed from, node.
LOW_JOB = ('D="$GPUPOOL_CHECKPOINT_DIR"; mkdir -p "$D"; n=$(cat "$D/progress" 2>/dev/null || echo 0); '
           'echo "$GPUPOOL_ATTEMPT $n $GPUPOOL_NODE $GPUPOOL_TASK_INDEX" >> {out}/$GPUPOOL_JOB_ID.starts; '
           "trap 'echo $n > \"$D/progress\"; exit 0' TERM; "
           'while [ $n -lt 400 ]; do n=$((n+1)); sleep 0.1; done')

FLEET = """
[[priority_class]]
name = "low"
value = 0

[[priority_class]]
name = "high"
value = 1000
max_time = "1h"
"""


def job(pool, jid):
    return pool.call("GET", f"/v1/jobs/{jid}")[1]


def wait(pool, ids, pred, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        jobs = {i: job(pool, i) for i in ids}
        if all(pred(j) for j in jobs.values()):
            return jobs
        time.sleep(0.1)
    return jobs


def fewest_victims(where, nodes, tasks):
    """The fewest distinct jobs whose removal frees `tasks` whole nodes: over every choice of
    nodes, the jobs with a task on any of them."""
    best = None
    for chosen in itertools.combinations(nodes, tasks):
        victims = {j for j, on in where.items() if on & set(chosen)}
        if best is None or len(victims) < len(best):
            best = victims
    return best


def priority_scenario(gpupool, c):
    pool = Pool(gpupool)
    try:
        fleet = os.path.join(pool.dir, "fleet.toml")
        os.makedirs(pool.dir, exist_ok=True)
        open(fleet, "w").write(FLEET)
        pool.start_server("--fleet", fleet, "--preemption", "priority", "--preempt-grace", f"{GRACE_S}s")
        out = pool.shared_dir(os.path.join(pool.dir, "out"))
        extra = ("--checkpoint-sync", "200ms")
        for n in ("n1", "n2", "n3"):
            pool.start_agent(n, "8xH100", extra=extra)
        pool.wait_nodes(3)
        cmd = ["sh", "-c", LOW_JOB.format(out=out)]
        gang = pool.submit(cmd, gpus=4, tasks=2, priority="low", name="low-gang")
        wait(pool, [gang], lambda j: j["state"] == "running")
        small = [pool.submit(cmd, gpus=1, priority="low", name=f"low-{k}") for k in range(13)]
        low = [gang] + small
        jobs = wait(pool, low, lambda j: j["state"] == "running")
        c.check(all(j["state"] == "running" for j in jobs.values()),
                f"the low-priority work runs: {[(i, j['state']) for i, j in jobs.items()]}")
        time.sleep(2.0)  # some progress, and a checkpoint shipped
        where = {i: {t["node"] for t in j["placement"]} for i, j in jobs.items()}
        need = fewest_victims(where, ["n1", "n2", "n3"], 2)
        busy = {n: sum(len([t for t in j["placement"] if t["node"] == n]) for j in jobs.values()) for n in ("n1", "n2", "n3")}
        print(f"priority: tasks per node {busy}; the fewest victims that free two nodes: {len(need)}", flush=True)

        t0 = time.time()
        high = pool.submit(["sh", "-c", "sleep 4"], gpus=8, tasks=2, priority="high", name="high-gang")
        running = wait(pool, [high], lambda j: j["state"] in ("running", "succeeded"), timeout=GRACE_S + 10)[high]
        took = time.time() - t0
        c.check(running["state"] in ("running", "succeeded") and took <= GRACE_S + 2,
                f"the high gang runs within grace + 2 s ({took:.2f} s, {running['state']}, {running['message']!r})")
        preempted = [i for i in low if job(pool, i)["attempt"] >= 2 or job(pool, i)["failing_over"] or job(pool, i)["state"] == "queued"]
        c.check(len(preempted) == len(need),
                f"exactly as many jobs preempted as needed: {len(preempted)} (the fewest: {len(need)})")
        high_nodes = {t["node"] for t in running["placement"]}
        c.check(all(where[i] & high_nodes for i in preempted), f"every victim was on the gang's nodes {sorted(high_nodes)}")

        # The victims resume once the gang is done; wait for all low work to run again.
        pool.wait_jobs([high], timeout=30)
        jobs = wait(pool, low, lambda j: j["state"] == "running" and (j["attempt"] >= 2 or j["id"] not in preempted), timeout=30)
        for i in preempted:
            j = jobs[i]
            outcome = j["attempts"][0]["outcome"] if j["attempts"] else ""
            starts = [line.split() for line in open(f"{out}/{i}.starts")]
            resumed = [s for s in starts if s[0] == "2"]
            c.check(j["failures"] == 0 and f"preempted by job {high}" in outcome,
                    f"job {i}: not a failure ({j['failures']}), says why: {outcome!r}")
            c.check(len(resumed) == j["tasks"] and all(int(s[1]) > 0 for s in resumed),
                    f"job {i}: every task resumed from its checkpoint ({resumed})")
        # The gang: both tasks ended with the same attempt, and both restarted together.
        if gang in preempted:
            starts = [line.split() for line in open(f"{out}/{gang}.starts")]
            by_attempt = {}
            for s in starts:
                by_attempt.setdefault(s[0], set()).add(s[3])
            c.check(by_attempt.get("1") == {"0", "1"} and by_attempt.get("2") == {"0", "1"},
                    f"the low gang was stopped and restarted whole: {by_attempt}")
        else:
            c.check(jobs[gang]["attempt"] == 1, "the low gang, not needed, ran on untouched")
        events = pool.all_events()
        kinds = [e["type"] for e in events if e.get("subject") in {f"job/{i}" for i in preempted}]
        c.check(kinds.count("io.gpupool.job.preempted") == len(preempted), f"one job.preempted event per victim ({kinds.count('job.preempted')})")
        c.check(any(e["type"] == "io.gpupool.job.preempting" and e.get("subject") == f"job/{high}" for e in events),
                "the preemptor's own event: job.preempting")
        s, metrics = pool.call("GET", "/metrics")
        line = next((ln for ln in metrics.splitlines() if ln.startswith("gpupool_preemptions_total")), "")
        c.check(line.endswith(f" {len(preempted)}"), f"/metrics counts the preemptions: {line!r}")
        print(f"priority: the 2 x 8 gang ran {took:.2f} s after submission (grace {GRACE_S} s); "
              f"{len(preempted)} jobs preempted, the minimum; all resumed from their checkpoints", flush=True)
        for i in low:
            pool.call("POST", f"/v1/jobs/{i}/cancel")

        # A tenant's default class applies to its jobs that give no priority; a class's maximum
        # time limit holds; an unknown class is refused, naming the known ones.
        r = pool.cli("tenant", "create", "ops", "--priority", "high")
        c.check(r.returncode == 0, f"tenant ops with default class high: {r.stdout}{r.stderr}")
        tok = pool.cli("token", "create", "--tenant", "ops", "--name", "ops").stdout.strip()
        s, body = pool.call("POST", "/v1/jobs", {"command": ["true"], "gpus": 1}, token=tok)
        got = job(pool, body["id"]) if s == 201 else {}
        c.check(got.get("priority") == 1000 and got.get("time_limit_ms") == 3_600_000,
                f"a job of ops without --priority is of class high, with its maximum as its limit: {got.get('priority')}, "
                f"{got.get('time_limit_ms')}")
        s, body = pool.call("POST", "/v1/jobs", {"command": ["true"], "gpus": 1, "priority": "high", "time": "2h"})
        c.check(s == 400 and "over priority class high's maximum of 1h" in str(body), f"class high's max time holds: {s} {body}")
        s, body = pool.call("PATCH", "/v1/tenants/ops", {"priority": "urgent"})
        c.check(s == 400 and "unknown priority class 'urgent'; known: low, high" in str(body), f"an unknown class: {s} {body}")
    finally:
        pool.stop()


def reclaim_scenario(gpupool, c):
    pool = Pool(gpupool)
    try:
        pool.start_server("--preemption", "reclaim", "--preempt-grace", "2s")
        for n in ("n1", "n2"):
            pool.start_agent(n, "4xH100")
        pool.wait_nodes(2)
        for name in ("a", "b"):
            r = pool.cli("tenant", "create", name, "--cohort", "lab", "--quota", "H100=4")
            c.check(r.returncode == 0, f"tenant {name}: {r.stdout}{r.stderr}")
        tok = {t: pool.cli("token", "create", "--tenant", t, "--name", t).stdout.strip() for t in ("a", "b")}

        def submit(t):
            s, body = pool.call("POST", "/v1/jobs", {"command": ["sleep", "120"], "gpus": 1}, token=tok[t])
            if s != 201:
                raise RuntimeError(f"submit for {t}: {s} {body}")
            return body["id"]

        b_jobs = [submit("b") for _ in range(8)]
        jobs = wait(pool, b_jobs, lambda j: j["state"] == "running")
        c.check(all(j["state"] == "running" for j in jobs.values()), "b runs 8 on its quota of 4 (4 borrowed from a)")
        a_jobs = [submit("a") for _ in range(3)]
        jobs = wait(pool, a_jobs, lambda j: j["state"] == "running", timeout=15)
        c.check(all(j["state"] == "running" for j in jobs.values()), f"a's 3 run: {[j['state'] for j in jobs.values()]}")
        b_now = {i: job(pool, i) for i in b_jobs}
        taken = [i for i, j in b_now.items() if j["attempt"] >= 2 or j["failing_over"] or j["state"] == "queued"]
        c.check(len(taken) == 3, f"exactly 3 of b's jobs preempted, as far as a needs ({len(taken)})")
        msgs = [(b_now[i]["attempts"] or [{}])[0].get("outcome", "") or b_now[i]["message"] for i in taken]
        c.check(all("tenant a takes back its quota, which tenant b borrowed" in m for m in msgs), f"they say why: {msgs}")
        c.check(all(b_now[i]["failures"] == 0 for i in taken), "a reclaim is no failure")
        still = [i for i, j in b_now.items() if j["state"] == "running" and i not in taken]
        c.check(len(still) == 5, f"b keeps 5 running: its quota 4 and 1 still borrowed ({len(still)})")
        print(f"reclaim: a took back 3 GPUs; b's jobs {taken} preempted, 5 kept", flush=True)
    finally:
        pool.stop()


# Saves its count on SIGTERM but takes 3 s to stop (a checkpoint being written).
SLOW_STOP = ("n=0; trap 'sleep 3; exit 0' TERM; "
             'while [ $n -lt 600 ]; do n=$((n+1)); sleep 0.1; done')


def restart_scenario(gpupool, c):
    """The server is killed (-9) while the victims of a preemption are still stopping: after the
    restart the job keeps what was held for it and starts there once they stop; no further job
    is preempted (without the stored hold it would look for victims again and stop 8 more)."""
    pool = Pool(gpupool)
    try:
        fleet = os.path.join(pool.dir, "fleet.toml")
        os.makedirs(pool.dir, exist_ok=True)
        open(fleet, "w").write(FLEET)
        pool.start_server("--fleet", fleet, "--preemption", "priority", "--preempt-grace", "10s")
        pool.start_agent("n1", "8xH100")
        pool.start_agent("n2", "8xH100")
        pool.wait_nodes(2)
        low = [pool.submit(["sh", "-c", SLOW_STOP], gpus=1, priority="low") for _ in range(16)]
        jobs = wait(pool, low, lambda j: j["state"] == "running")
        c.check(all(j["state"] == "running" for j in jobs.values()), "restart: 16 low jobs run on 2 x 8 GPUs")
        time.sleep(1.0)
        high = pool.submit(["sh", "-c", "sleep 2"], gpus=8, priority="high")
        stopping = wait(pool, low, lambda j: True, timeout=1)
        deadline = time.time() + 5
        while time.time() < deadline:
            stopping = [i for i in low if job(pool, i)["failing_over"]]
            if len(stopping) == 8:
                break
            time.sleep(0.1)
        c.check(len(stopping) == 8, f"restart: 8 victims stopping before the restart ({len(stopping)})")
        pool.kill_server()
        pool.start_server()
        done = wait(pool, [high], lambda j: j["state"] in ("running", "succeeded"), timeout=20)[high]
        c.check(done["state"] in ("running", "succeeded"), f"restart: the job starts after the restart ({done['state']}, "
                f"{done['message']!r})")
        time.sleep(1.0)
        preempted = [i for i in low if job(pool, i)["attempt"] >= 2 or job(pool, i)["failing_over"]
                     or job(pool, i)["state"] == "queued"]
        c.check(sorted(preempted) == sorted(stopping),
                f"restart: only the first 8 were preempted ({len(preempted)}: {sorted(preempted)} against {sorted(stopping)})")
        victim_nodes = {job(pool, i)["attempts"][0]["nodes"][0] for i in stopping if job(pool, i)["attempts"]}
        c.check({t["node"] for t in done["placement"]} <= victim_nodes,
                f"restart: it runs where it was promised ({done['placement'][0]['node']} in {victim_nodes})")
        print(f"restart: killed during the victims' grace; after the restart job {high} started on "
              f"{done['placement'][0]['node']} and {len(preempted)} jobs were preempted in all", flush=True)
        for i in low:
            pool.call("POST", f"/v1/jobs/{i}/cancel")
    finally:
        pool.stop()


def main(gpupool):
    c = Checks()
    priority_scenario(gpupool, c)
    reclaim_scenario(gpupool, c)
    restart_scenario(gpupool, c)
    return c.done()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "build/gpupool"))
