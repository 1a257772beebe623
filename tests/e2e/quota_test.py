"""Quotas, borrowing and fair share on a live pool (simulated GPUs, real processes).

1. Quota and borrowing (Kueue's model): tenants a (4 H100, may borrow 2) and b (4 H100) share
   cohort lab on 12 H100s. While b's 4 are busy, a at its quota waits with the numbers (4 GPUs
   free); when b is idle a borrows up to its limit and no further (6 GPUs stay free, and a's
   next job waits naming its limit); `gpupool tenants` shows the same figures (used, borrowed,
   lent); b takes its quota back, and a borrows nothing more while b uses it.
2. Fair share: tenants of weights 1 and 2 keep 6 GPUs busy with many 3 s jobs under
   `fairshare/fifo` (half-life 15 s); over 90 s after a warm-up each gets its entitled share of
   GPU-time (1/3 and 2/3) within 10%."""
import subprocess
import sys
import time

from pool import Checks, Pool


def wait_state(pool, ids, states, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        now = {i: pool.call("GET", f"/v1/jobs/{i}")[1].get("state") for i in ids}
        if all(s in states for s in now.values()):
            return now
        time.sleep(0.1)
    return now


def tenants_rows(cli):
    r = cli("tenants")
    rows = {}
    for line in r.stdout.splitlines()[1:]:
        f = line.split()
        rows[f[0]] = dict(zip(["cohort", "model", "quota", "used", "borrowed", "lent"], f[1:7]))
    return rows, r.stdout


def quota_and_borrowing(gpupool, c):
    pool = Pool(gpupool)
    try:
        pool.start_server()
        pool.start_agent("n1", "4xH100")
        pool.start_agent("n2", "4xH100")
        pool.start_agent("n3", "4xH100")
        pool.wait_nodes(3)
        admin = ["--server", f"127.0.0.1:{pool.port}", "--token", pool.token]

        def cli(*args):
            return subprocess.run([gpupool, *args, *admin], capture_output=True, text=True)

        for name, extra in (("a", ["--quota", "H100=4", "--borrow-limit", "H100=2"]), ("b", ["--quota", "H100=4"])):
            r = cli("tenant", "create", name, "--cohort", "lab", *extra)
            c.check(r.returncode == 0, f"tenant {name}: {r.stdout}{r.stderr}")
        tok = {t: cli("token", "create", "--tenant", t, "--name", t).stdout.strip() for t in ("a", "b")}

        def submit(t, seconds=120):
            s, body = pool.call("POST", "/v1/jobs", {"command": ["sleep", str(seconds)], "gpus": 1}, token=tok[t])
            if s != 201:
                raise RuntimeError(f"submit for {t}: {s} {body}")
            return body["id"]

        b_jobs = [submit("b") for _ in range(4)]
        c.check(set(wait_state(pool, b_jobs, ("running",)).values()) == {"running"}, "b runs its 4")
        a_jobs = [submit("a") for _ in range(4)]
        c.check(set(wait_state(pool, a_jobs, ("running",)).values()) == {"running"}, "a runs its 4 (its nominal quota)")
        over = submit("a")
        time.sleep(1.0)
        job = pool.call("GET", f"/v1/jobs/{over}")[1]
        want = "quota: a uses 4 of 4 H100 and asks 1; it may borrow 2 more (limit 2); cohort lab can lend 0 (b uses 4 of its 4)"
        c.check(job["state"] == "queued" and want in job["message"], f"a at its quota waits with the numbers: {job['message']!r}")
        s, ex = pool.call("GET", f"/v1/jobs/{over}/explain")
        text = ex.get("explain", "") if isinstance(ex, dict) else ""
        c.check(s == 200 and want in text and "tenant a: weight 1" in text and "H100: uses 4 of its quota 4, borrowed 0, lent 0" in text,
                f"explain gives the quota's numbers and where the tenant stands: {text}")
        rows, text = tenants_rows(cli)
        c.check(rows.get("a", {}).get("used") == "4" and rows.get("b", {}).get("used") == "4" and rows["a"]["borrowed"] == "0",
                f"`gpupool tenants`: a uses 4, b 4, nothing borrowed:\n{text}")

        # b goes idle: a borrows up to its limit (2), and no further.
        for j in b_jobs:
            pool.call("POST", f"/v1/jobs/{j}/cancel")
        c.check(wait_state(pool, [over], ("running",))[over] == "running", "b idle: a's waiting job borrows and runs")
        more = [submit("a"), submit("a")]
        time.sleep(1.5)
        states = {j: pool.call("GET", f"/v1/jobs/{j}")[1] for j in more}
        running = [j for j in more if states[j]["state"] == "running"]
        waiting = [j for j in more if states[j]["state"] == "queued"]
        c.check(len(running) == 1 and len(waiting) == 1, f"a borrows one more (2 in all) and the next waits: "
                f"{[(j, s['state']) for j, s in states.items()]}")
        if waiting:
            msg = states[waiting[0]]["message"]
            c.check("a uses 6 of 4 H100 (2 borrowed) and asks 1; it may borrow 0 more (limit 2)" in msg,
                    f"the next waits for its borrowing limit, with 2 GPUs free: {msg!r}")
        rows, text = tenants_rows(cli)
        c.check(rows.get("a", {}).get("used") == "6" and rows["a"]["borrowed"] == "2" and rows.get("b", {}).get("lent") == "2"
                and rows["b"]["used"] == "0", f"`gpupool tenants` matches: a uses 6, borrowed 2; b lent 2:\n{text}")
        s, metrics = pool.call("GET", "/metrics")
        for line in ('gpupool_tenant_quota_gpus{tenant="a",model="H100"} 4', 'gpupool_tenant_borrowed_gpus{tenant="a",model="H100"} 2',
                     'gpupool_tenant_lent_gpus{tenant="b",model="H100"} 2'):
            c.check(line in metrics, f"/metrics: {line}")
        s, nodes = pool.call("GET", "/v1/nodes")
        free = sum(n.get("free_gpus", 0) for n in nodes.get("nodes", [])) if isinstance(nodes, dict) else None
        c.check(free == 6, f"6 GPUs stay free: the limit, not the capacity, holds a back ({free} free)")

        # b takes its quota back (its nominal is always admitted); a borrows nothing more.
        b_back = [submit("b") for _ in range(4)]
        c.check(set(wait_state(pool, b_back, ("running",)).values()) == {"running"}, "b takes its quota back")
        pool.call("POST", f"/v1/jobs/{over}/cancel")  # a ends one borrowed job
        time.sleep(1.5)
        if waiting:
            msg = pool.call("GET", f"/v1/jobs/{waiting[0]}")[1]
            c.check(msg["state"] == "queued" and "cohort lab can lend 0 (b uses 4 of its 4)" in msg["message"],
                    f"with b using its quota, a's next job waits although it is under its borrowing limit: {msg['message']!r}")
        rows, text = tenants_rows(cli)
        c.check(rows.get("a", {}).get("used") == "5" and rows["a"]["borrowed"] == "1" and rows.get("b", {}).get("used") == "4",
                f"`gpupool tenants`: a uses 5 (1 borrowed, returning as its jobs end), b its 4:\n{text}")

        # Bad input: each refused naming the field; nothing already accepted is lost.
        bad = [("PATCH", "/v1/tenants/a", {"quota": {"H100": -1}}, 400, "quota: H100=-1"),
               ("PATCH", "/v1/tenants/a", {"borrow_limit": {"H100": 10 ** 9}}, 400, "borrow_limit: H100=1000000000"),
               ("PATCH", "/v1/tenants/a", {"weight": 0}, 400, "weight"),
               ("PATCH", "/v1/tenants/a", {"cohort": "b"}, 400, "cohort 'b' is a tenant's name"),
               ("PATCH", "/v1/tenants/a", {"order": "random"}, 400, "unknown queue order 'random'"),
               ("PATCH", "/v1/tenants/a", {"name": "z"}, 400, "cannot be renamed"),
               ("PATCH", "/v1/tenants/nobody", {"weight": 2}, 404, "no tenant 'nobody'"),
               ("POST", "/v1/tenants", {"name": "lab", "cohort": "x"}, 400, "cohort 'lab' is a tenant's name"),
               ("POST", "/v1/tokens", {"tenant": "nobody"}, 400, "no tenant 'nobody'")]
        for method, path, body, want, text_ in bad:
            s, out = pool.call(method, path, body)
            c.check(s == want and text_ in str(out), f"{method} {path} {body}: {want} naming it: {s} {out}")
        s, a_now = pool.call("GET", "/v1/tenants/a")
        c.check(a_now.get("quota") == {"H100": 4} and a_now.get("borrow_limit") == {"H100": 2} and a_now.get("cohort") == "lab",
                f"a's quota, limit and cohort are as accepted: {a_now}")
        r = cli("tenant", "set", "a", "--borrow-limit", "H100=3")
        c.check(r.returncode == 0, f"`gpupool tenant set` changes one figure: {r.stdout}{r.stderr}")
        s, a_now = pool.call("GET", "/v1/tenants/a")
        c.check(a_now.get("quota") == {"H100": 4} and a_now.get("borrow_limit") == {"H100": 3}, f"the rest stays: {a_now}")
    finally:
        pool.stop()


def fair_share(gpupool, c):
    pool = Pool(gpupool)
    try:
        pool.start_server("--policy", "fairshare/fifo", "--fair-share-half-life", "15s")
        pool.start_agent("n1", "6xH100", interval="100ms")
        pool.wait_nodes(1)
        admin = ["--server", f"127.0.0.1:{pool.port}", "--token", pool.token]

        def cli(*args):
            return subprocess.run([gpupool, *args, *admin], capture_output=True, text=True)

        for name, w in (("light", "1"), ("heavy", "2")):
            c.check(cli("tenant", "create", name, "--weight", w).returncode == 0, f"tenant {name} (weight {w})")
        tok = {t: cli("token", "create", "--tenant", t).stdout.strip() for t in ("light", "heavy")}
        start = time.time()
        # Far more than either runs in the test: both always wait.
        # (weight 2 runs 4 at a time: about 150 jobs of 3 s in the 110 s measured)
        for _ in range(250):
            for t in ("light", "heavy"):
                s, _ = pool.call("POST", "/v1/jobs", {"command": ["sleep", "3"], "gpus": 1}, token=tok[t])
                if s != 201:
                    raise RuntimeError(f"submit: {s}")
        warm, window = 20.0, 90.0
        t0 = (start + warm) * 1000
        t1 = t0 + window * 1000
        time.sleep(max(0.0, start + warm + window + 1 - time.time()))
        gpu_ms = {"light": 0.0, "heavy": 0.0}
        for j in pool.all_jobs():
            if not j.get("start_ms"):
                continue
            end = j.get("end_ms") or time.time() * 1000
            overlap = max(0.0, min(end, t1) - max(j["start_ms"], t0))
            gpu_ms[j["tenant"]] = gpu_ms.get(j["tenant"], 0.0) + overlap  # 1 GPU each
        total = gpu_ms["light"] + gpu_ms["heavy"]
        c.check(total > 0.8 * 6 * window * 1000, f"the pool stays busy: {total / 1000:.0f} of {6 * window:.0f} GPU-s")
        light, heavy = gpu_ms["light"] / total, gpu_ms["heavy"] / total
        print(f"fair share over {window:.0f} s: weight 1 {light:.3f}, weight 2 {heavy:.3f} of {total / 1000:.0f} GPU-s "
              f"({total / (6 * window * 10):.0f}% busy)", flush=True)
        c.check(abs(light - 1 / 3) <= 0.1 / 3, f"weight 1 gets 1/3 of the GPU-time within 10%: {light:.3f}")
        c.check(abs(heavy - 2 / 3) <= 0.2 / 3, f"weight 2 gets 2/3 of the GPU-time within 10%: {heavy:.3f}")
        rows, text = tenants_rows(cli)
        c.check(set(rows) == {"light", "heavy"}, f"`gpupool tenants` lists both with decayed usage and rank:\n{text}")
    finally:
        pool.stop()


def main(gpupool):
    c = Checks()
    quota_and_borrowing(gpupool, c)
    fair_share(gpupool, c)
    return c.done()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
