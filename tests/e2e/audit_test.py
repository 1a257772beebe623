"""The audit trail: every change made through the API is an event naming who made it (the
token's name, id, tenant and role, or the admin; never a secret). A tenant's user submits and
cancels a job with her token; the admin drains and undrains a node, makes a tenant and a token
and revokes it. `gpupool events --actor alice` answers "who cancelled my job"."""
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from pool import Checks, Pool  # noqa: E402


def main():
    gpupool = sys.argv[1]
    c = Checks()
    pool = Pool(gpupool)
    try:
        pool.start_server()
        pool.start_agent("n1", "2xV100")
        pool.wait_nodes(1)
        r = pool.cli("tenant", "create", "team-a")
        c.check(r.returncode == 0, f"the admin makes a tenant: {r.stderr}")
        r = pool.cli("token", "create", "--tenant", "team-a", "--name", "alice")
        c.check(r.returncode == 0, f"the admin makes alice's token: {r.stderr}")
        alice = r.stdout.strip().split()[-1]
        env = dict(os.environ, GPUPOOL_ADDR=f"127.0.0.1:{pool.port}", GPUPOOL_TOKEN=alice)

        def as_alice(*args):
            return subprocess.run([gpupool, *args], capture_output=True, text=True, env=env)

        r = as_alice("submit", "--name", "mine", "--", "sleep", "60")
        c.check(r.returncode == 0, f"alice submits: {r.stderr}")
        job = r.stdout.strip()
        deadline = time.time() + 20
        while time.time() < deadline and pool.call("GET", f"/v1/jobs/{job}")[1].get("state") != "running":
            time.sleep(0.1)
        r = as_alice("cancel", job)
        c.check(r.returncode == 0, f"alice cancels her job: {r.stderr}")
        for verb in ("drain", "undrain"):
            r = pool.cli(verb, "n1")
            c.check(r.returncode == 0, f"the admin {verb}s n1: {r.stderr}")
        r = pool.cli("token", "create", "--tenant", "team-a", "--name", "bob")
        bob_secret = r.stdout.strip().split()[-1]
        bob_id = next(t["id"] for t in pool.call("GET", "/v1/tokens")[1]["tokens"] if t["name"] == "bob")
        r = pool.cli("token", "revoke", bob_id)
        c.check(r.returncode == 0, f"the admin revokes bob's token: {r.stderr}")
        pool.wait_jobs([job], timeout=30)
        for args in (("gpu", "xid", "n1", "0", "79"), ("gpu", "undrain", "n1", "0"), ("reclaim", "n1", "--notice", "1s")):
            r = pool.cli(*args)
            c.check(r.returncode == 0, f"the admin runs `{' '.join(args)}`: {r.stderr}")
        deadline = time.time() + 10
        while time.time() < deadline and not any(e["type"] == "io.gpupool.node.reclaimed" for e in pool.all_events()):
            time.sleep(0.1)

        events = pool.all_events()
        text = json.dumps(events)
        c.check(alice not in text and bob_secret not in text and pool.token not in text, "no token's secret is in any event")

        def actor(e):
            return e.get("data", {}).get("actor")

        about_job = [e for e in events if e["subject"] == f"job/{job}"]
        submitted = [e for e in about_job if e["type"] == "io.gpupool.job.submitted"]
        c.check(submitted and actor(submitted[0]) is not None and actor(submitted[0]).get("name") == "alice"
                and actor(submitted[0]).get("tenant") == "team-a" and actor(submitted[0]).get("role") == "user",
                f"the submission names alice of team-a as its actor: {submitted[:1]}")
        by_alice = [e for e in about_job if (actor(e) or {}).get("name") == "alice"]
        c.check(any(e["type"] != "io.gpupool.job.submitted" for e in by_alice),
                f"the cancellation names alice as its actor: {[(e['type'], actor(e)) for e in about_job]}")
        ended = [e for e in about_job if e["type"] in ("io.gpupool.job.cancelled", "io.gpupool.job.succeeded", "io.gpupool.job.failed")]
        c.check(ended and actor(ended[-1]) is None,
                f"the job's end, reported by its agent, is the pool's own (no actor): {[(e['type'], actor(e)) for e in ended]}")
        for typ, subject in (("node.drained", "node/n1"), ("node.undrained", "node/n1"), ("tenant.created", "tenant/team-a"),
                             ("token.created", f"token/{bob_id}"), ("token.revoked", f"token/{bob_id}"),
                             ("gpu.returned", "node/n1/gpu/0"), ("node.reclaimed", "node/n1")):
            found = [e for e in events if e["type"] == "io.gpupool." + typ and e["subject"] == subject]
            c.check(found and actor(found[0]) == {"kind": "admin"}, f"{typ} {subject}: made by the admin ({found[:1]})")
        changes = [e for e in events if e["type"].split(".")[-1] in ("created", "revoked", "drained", "undrained")]
        c.check(all(actor(e) is not None for e in changes), "every change through the API has an actor")

        r = pool.cli("events", "--actor", "alice")
        lines = [ln for ln in r.stdout.splitlines() if ln.strip()]
        c.check(r.returncode == 0 and lines and all(f"job/{job}" in ln for ln in lines),
                f"`events --actor alice` lists alice's changes and nothing else: {lines}")
        c.check(any("job.submitted" in ln for ln in lines) and len(lines) >= 2, f"...her submission and her cancel: {lines}")
        r = pool.cli("events", "--actor", "admin")
        c.check(r.returncode == 0 and any("node.drained" in ln for ln in r.stdout.splitlines())
                and not any(f"job/{job}" in ln and "job.submitted" in ln for ln in r.stdout.splitlines()),
                "`events --actor admin` lists the admin's changes, not alice's")
    finally:
        pool.stop()
    return c.done()


if __name__ == "__main__":
    sys.exit(main())
