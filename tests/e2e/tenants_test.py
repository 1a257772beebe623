"""Two teams on one pool, each with its own tokens: every place a job is visible shows a
tenant its own jobs only, and another tenant's job id answers 404 (ids leak nothing); a
viewer reads but cannot submit or cancel (403); a job's tenant comes from its token, not
from the request body; a revoked token is refused at once, an expired one too, and so is a
token of a deleted tenant. Bad input is refused naming the field. Made with the CLI as an
admin would: `gpupool tenant create`, `gpupool token create`."""
import json
import subprocess
import sys
import time
import urllib.request

from pool import Checks, Pool


def main(gpupool):
    c = Checks()
    pool = Pool(gpupool)
    try:
        pool.start_server()
        pool.start_agent("n1", "4xH100")
        pool.wait_nodes(1)
        admin = ["--server", f"127.0.0.1:{pool.port}", "--token", pool.token]

        def cli(*args):
            return subprocess.run([gpupool, *args, *admin], capture_output=True, text=True)

        for name, extra in (("llm", ["--weight", "2", "--quota", "H100=64"]), ("vision", ["--cohort", "research", "--quota", "H100=4"])):
            r = cli("tenant", "create", name, *extra)
            c.check(r.returncode == 0, f"tenant {name} created: {r.stdout}{r.stderr}")
        tok = {}
        for key, tenant, role in (("llm", "llm", "user"), ("vision", "vision", "user"), ("llm-viewer", "llm", "viewer")):
            r = cli("token", "create", "--tenant", tenant, "--role", role, "--name", key)
            tok[key] = r.stdout.strip()
            c.check(r.returncode == 0 and len(tok[key]) == 64, f"token for {key}: {r.stderr.strip()}")
        listed = cli("tenants")
        rows = {l.split()[0]: l.split() for l in listed.stdout.splitlines()[1:]}
        c.check(rows.get("llm", [])[1:4] == ["-", "H100", "64"] and rows.get("vision", [])[1:4] == ["research", "H100", "4"],
                f"`gpupool tenants` lists them with cohort, model and quota: {listed.stdout}")
        tokens = cli("token", "list")
        c.check(tokens.stdout.count("active") == 3 and not any(t in tokens.stdout for t in tok.values()),
                f"`gpupool token list` shows ids, never secrets: {tokens.stdout}")

        def job(token, body):
            return pool.call("POST", "/v1/jobs", body, token=token)

        s, a = job(tok["llm"], {"command": ["sh", "-c", "echo from-llm; sleep 30"], "gpus": 1, "tenant": "vision"})
        c.check(s == 201, f"a user submits: {s} {a}")
        s, b = job(tok["vision"], {"command": ["sh", "-c", "echo from-vision; sleep 30"], "gpus": 1})
        c.check(s == 201, f"the other tenant submits: {s} {b}")
        a, b = a["id"], b["id"]
        s, ja = pool.call("GET", f"/v1/jobs/{a}")
        c.check(ja.get("tenant") == "llm", f"the job's tenant is its token's, not the body's ('vision'): {ja.get('tenant')}")
        deadline = time.time() + 15
        while time.time() < deadline and any(pool.call("GET", f"/v1/jobs/{j}")[1]["state"] != "running" for j in (a, b)):
            time.sleep(0.1)

        listed = cli("tenants")
        rows = {l.split()[0]: l.split() for l in listed.stdout.splitlines()[1:]}
        c.check(rows.get("llm", [])[4:5] == ["1"] and rows.get("vision", [])[4:5] == ["1"],
                f"`gpupool tenants` shows what each holds now (USED): {listed.stdout}")
        s, metrics = pool.call("GET", "/metrics")
        c.check('gpupool_tenant_gpus_in_use{tenant="llm",model="H100"} 1' in metrics,
                "/metrics has each tenant's GPUs in use by model")
        for me, mine, theirs in (("llm", a, b), ("vision", b, a)):
            s, jobs = pool.call("GET", "/v1/jobs", token=tok[me])
            ids = [j["id"] for j in jobs.get("jobs", [])]
            c.check(s == 200 and ids == [mine], f"{me} lists its own job only: {ids}")
            s, jobs = pool.call("GET", f"/v1/jobs?tenant={'vision' if me == 'llm' else 'llm'}", token=tok[me])
            c.check(s == 200 and [j["id"] for j in jobs.get("jobs", [])] == [mine], f"{me} cannot list the other's by asking for it")
            for path in (f"/v1/jobs/{theirs}", f"/v1/jobs/{theirs}/logs", f"/v1/jobs/{theirs}/explain"):
                s, body = pool.call("GET", path, token=tok[me])
                c.check(s == 404 and "no job" in body.get("error", ""), f"{me}: GET {path} answers 404 as for no such job: {s}")
            s, _ = pool.call("POST", f"/v1/jobs/{theirs}/cancel", token=tok[me])
            c.check(s == 404, f"{me} cannot cancel the other's job (404): {s}")
            s, log = pool.call("GET", f"/v1/jobs/{mine}/logs", token=tok[me])
            c.check(s == 200, f"{me} reads its own job's log: {s}")
            status, text = pool.call("GET", "/v1/events?since=0&limit=10000", token=tok[me])
            events = [json.loads(l) for l in text.splitlines()] if isinstance(text, str) else [text]
            subjects = {e["subject"] for e in events}
            c.check(f"job/{mine}" in subjects and f"job/{theirs}" not in subjects and all(s.startswith("job/") for s in subjects),
                    f"{me}'s event stream has its own job's events only: {sorted(subjects)}")
            s, who = pool.call("GET", "/v1/whoami", token=tok[me])
            c.check(who == {"kind": "tenant", "tenant": me, "role": "user", "token": who.get("token")}, f"whoami: {who}")

        # The dashboard's session: the same token in its cookie sees the same.
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
        opener.open(f"http://127.0.0.1:{pool.port}/?token={tok['vision']}", timeout=10).read()
        seen = json.loads(opener.open(f"http://127.0.0.1:{pool.port}/v1/jobs", timeout=10).read())
        c.check([j["id"] for j in seen["jobs"]] == [b], f"the dashboard's session sees its tenant's jobs only: {seen}")

        viewer = tok["llm-viewer"]
        s, body = job(viewer, {"command": ["true"], "gpus": 1})
        c.check(s == 403 and "viewer" in body.get("error", ""), f"a viewer cannot submit (403): {s} {body}")
        s, _ = pool.call("POST", f"/v1/jobs/{a}/cancel", token=viewer)
        c.check(s == 403, f"nor cancel (403): {s}")
        s, ja = pool.call("GET", f"/v1/jobs/{a}", token=viewer)
        c.check(s == 200 and ja["id"] == a, f"but reads its tenant's jobs: {s}")
        for method, path in (("POST", "/v1/nodes/n1/drain"), ("POST", "/v1/tenants"), ("GET", "/v1/tokens")):
            s, _ = pool.call(method, path, {}, token=tok["llm"])
            c.check(s == 403, f"{method} {path} is the admin's (403 for a user): {s}")
        s, ts = pool.call("GET", "/v1/tenants", token=tok["llm"])
        c.check([t["name"] for t in ts.get("tenants", [])] == ["llm"], f"a tenant sees its own tenant only: {ts}")

        # Revoked: refused at once. Expired: refused. A deleted tenant's token: refused.
        ids = {t["name"]: t["id"] for t in pool.call("GET", "/v1/tokens")[1]["tokens"]}
        r = cli("token", "revoke", ids["llm-viewer"])
        c.check(r.returncode == 0, f"revoked: {r.stdout}{r.stderr}")
        s, _ = pool.call("GET", "/v1/jobs", token=viewer)
        c.check(s == 401, f"a revoked token is refused at once: {s}")
        r = cli("token", "create", "--tenant", "llm", "--ttl", "1s")
        short = r.stdout.strip()
        s1, _ = pool.call("GET", "/v1/jobs", token=short)
        time.sleep(1.3)
        s2, _ = pool.call("GET", "/v1/jobs", token=short)
        c.check(s1 == 200 and s2 == 401, f"a token with a 1 s lifetime works, then is refused: {s1} then {s2}")
        s, _ = pool.call("POST", f"/v1/jobs/{b}/cancel", token=tok["vision"])
        r = cli("tenant", "delete", "vision")
        s, _ = pool.call("GET", "/v1/jobs", token=tok["vision"])
        c.check(r.returncode == 0 and s == 401, f"a deleted tenant's token is refused: {s}")
        s, jb = pool.call("GET", f"/v1/jobs/{b}")
        c.check(s == 200 and jb["tenant"] == "vision", "its jobs stay, with their label")
        # Usage by tenant and day: the admin sees vision's cancelled job's GPU time; llm does not.
        deadline = time.time() + 10
        rows = []
        while time.time() < deadline and not any(r["tenant"] == "vision" for r in rows):
            rows = pool.call("GET", "/v1/usage?by=tenant,day")[1].get("rows", [])
            time.sleep(0.2)
        c.check(any(r["tenant"] == "vision" and r["gpu_hours"] > 0 and len(r["day"]) == 10 for r in rows),
                f"usage by tenant and day, for the admin: {rows}")
        s, u = pool.call("GET", "/v1/usage?by=tenant,day", token=tok["llm"])
        c.check(s == 200 and not any(r["tenant"] != "llm" for r in u.get("rows", [])), f"a tenant's usage is its own only: {u}")

        # Bad input names the field; nothing accepted is lost.
        bad = [({"name": "Bad Name"}, "name"), ({"name": "ok", "weight": 0}, "weight"), ({"name": "ok", "weight": "x"}, "weight"),
               ({"name": "ok", "quota": {"H100": -1}}, "quota"), ({"name": "llm"}, "exists"), ("[1]", "JSON")]
        for body, field in bad:
            raw = body.encode() if isinstance(body, str) else None
            s, e = pool.call("POST", "/v1/tenants", None if raw else body, raw=raw)
            c.check(s in (400, 409) and field in e.get("error", ""), f"tenant {body}: refused naming {field}: {s} {e}")
        for body, field in (({"tenant": "nope"}, "tenant"), ({"tenant": "llm", "role": "root"}, "role"),
                            ({"tenant": "llm", "ttl": "soon"}, "ttl"), ({}, "tenant")):
            s, e = pool.call("POST", "/v1/tokens", body)
            c.check(s == 400 and field in e.get("error", ""), f"token {body}: refused naming {field}: {s} {e}")

        # Kept in the store: a restarted server knows the tenants and tokens.
        pool.stop_server()
        pool.start_server()
        s, jobs = pool.call("GET", "/v1/jobs", token=tok["llm"])
        c.check(s == 200 and [j["id"] for j in jobs["jobs"]] == [a], f"after a restart the token still works, same view: {s}")
        s, _ = pool.call("GET", "/v1/jobs", token=viewer)
        c.check(s == 401, f"and the revoked one is still refused: {s}")
    finally:
        pool.stop()
    return c.done()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
