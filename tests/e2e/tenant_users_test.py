"""The process driver runs each tenant's jobs as the unix user its tenant maps to: a real agent
(root, as on a GPU host) runs `id` for jobs of four tenants: two mapped to Debian's own system
users (daemon, bin), one unmapped (the agent's --job-user, nobody), and one mapped to a user
this node lacks, whose task fails saying so. Run as another user, the agent cannot switch
users, and a mapped tenant's task fails saying that instead."""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from pool import Checks, Pool  # noqa: E402


def main():
    gpupool = sys.argv[1]
    c = Checks()
    pool = Pool(gpupool)
    root = os.geteuid() == 0
    try:
        pool.start_server()
        out = pool.shared_dir(f"{pool.dir}/out")
        pool.start_agent("n1", "2xV100")
        pool.wait_nodes(1)
        tenants = {"t-daemon": "daemon", "t-bin": "bin", "t-plain": None, "t-ghost": "nosuchuser4711"}
        for name, user in tenants.items():
            args = ["tenant", "create", name] + (["--unix-user", user] if user else [])
            r = pool.cli(*args)
            c.check(r.returncode == 0, f"tenant {name} made: {r.stderr}")
        r = pool.cli("tenant", "create", "t-root", "--unix-user", "root")
        c.check(r.returncode != 0 and "root" in r.stderr, f"a tenant mapped to root is refused: {r.stderr.strip()}")
        ids = {}
        for name in tenants:
            status, body = pool.call("POST", "/v1/jobs", {"command": ["sh", "-c", f"id -un > {out}/$GPUPOOL_JOB_ID"],
                                                         "tenant": name, "name": name})
            c.check(status == 201, f"a job of {name} submitted: {status} {body}")
            ids[name] = body.get("id")
        jobs = pool.wait_jobs(list(ids.values()), timeout=30)
        for name, user in tenants.items():
            j = jobs[ids[name]]
            ran = open(f"{out}/{ids[name]}").read().strip() if os.path.exists(f"{out}/{ids[name]}") else None
            if not root:
                if user:
                    c.check(j["state"] == "failed" and "does not run as root" in j["message"],
                            f"{name}: the agent is not root, so the task fails saying so ({j['state']}: {j['message']})")
                continue
            if name == "t-ghost":
                c.check(j["state"] == "failed" and ran is None, f"{name}: no such user on the node: the task fails ({j['state']})")
                status, logs = pool.call("GET", f"/v1/jobs/{ids[name]}/logs?task=0&stream=stderr")
                text = logs if isinstance(logs, str) else str(logs)
                c.check("nosuchuser4711" in text and "no such user" in text, f"{name}: its stderr says why: {text[:200]}")
                continue
            want = user or "nobody"
            c.check(j["state"] == "succeeded" and ran == want, f"{name}: its job ran as {want} (ran as {ran}, {j['state']})")
        status, body = pool.call("GET", "/v1/tenants/t-daemon")
        c.check(body.get("unix_user") == "daemon", f"the tenant shows its unix user: {body}")
        r = pool.cli("tenant", "set", "t-daemon", "--unix-user", "none")
        status, body = pool.call("GET", "/v1/tenants/t-daemon")
        c.check(r.returncode == 0 and body.get("unix_user") == "", f"--unix-user none unsets it: {body.get('unix_user')!r}")
    finally:
        pool.stop()
    return c.done()


if __name__ == "__main__":
    sys.exit(main())
