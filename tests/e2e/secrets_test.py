"""A job's secret reaches its environment and nothing else: not the API's answers, the CLI,
the events, the dashboard's pages, /metrics, the server's or the agent's own output, nor the
store's files (sealed there under a key kept in a file of its own). One job is submitted before
any node can take it and the server restarted, so its secret comes back from the store."""
import glob
import json
import os
import subprocess
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(__file__))
from pool import Checks, Pool  # noqa: E402


def main():
    gpupool = sys.argv[1]
    c = Checks()
    pool = Pool(gpupool)
    secret = "s3cr3t-" + uuid.uuid4().hex
    from_file = "f1le-" + uuid.uuid4().hex
    outdir = pool.shared_dir(f"{pool.dir}/out")
    try:
        pool.start_server()
        with open(f"{pool.dir}/pw.txt", "w") as f:
            f.write(from_file + "\n")
        env = dict(os.environ, GPUPOOL_ADDR=f"127.0.0.1:{pool.port}", GPUPOOL_TOKEN=pool.token)
        # Waits for a node: stored with its secrets sealed, then the server restarts.
        r = subprocess.run([gpupool, "submit", "--name", "later", "--gpus", "1", "--secret", f"DB_PASSWORD={secret}",
                            "--secret", f"API_KEY=@{pool.dir}/pw.txt", "--",
                            "sh", "-c", f'printf "%s %s" "$DB_PASSWORD" "$API_KEY" > {outdir}/later'],
                           capture_output=True, text=True, env=env)
        c.check(r.returncode == 0, f"submit with --secret: {r.stderr}")
        later = r.stdout.strip()
        status, body = pool.call("POST", "/v1/jobs", {"command": ["true"], "secrets": {"1BAD": "x"}})
        c.check(status == 400 and "variable name" in json.dumps(body), f"a secret's name is checked: {status} {body}")
        status, body = pool.call("POST", "/v1/jobs", {"command": ["true"], "env": {"A": "1"}, "secrets": {"A": "2"}})
        c.check(status == 400, f"a name both in env and secrets is refused: {status}")
        first = pool.server
        pool.stop_server()
        server_out = first.stdout.read()
        db = glob.glob(f"{pool.dir}/server/gpupool.db*")
        stored = b"".join(open(p, "rb").read() for p in db)
        c.check(len(stored) > 0 and secret.encode() not in stored and from_file.encode() not in stored,
                "the store's files hold the secrets sealed, not as given")
        c.check(b"gpsec1:" in stored, "...and hold them sealed")
        key = f"{pool.dir}/server/secrets.key"
        c.check(os.path.exists(key) and (os.stat(key).st_mode & 0o777) == 0o600, "the key is a file of its own, mode 0600")
        pool.start_server()
        pool.start_agent("n1", "2xV100", stderr=open(f"{pool.dir}/agent.log", "w"))
        pool.wait_nodes(1)
        r = subprocess.run([gpupool, "submit", "--name", "now", "--secret", f"DB_PASSWORD={secret}", "--",
                            "sh", "-c", f'printf "%s" "$DB_PASSWORD" > {outdir}/now'], capture_output=True, text=True, env=env)
        now = r.stdout.strip()
        jobs = pool.wait_jobs([later, now], timeout=30)
        c.check(all(jobs[i]["state"] == "succeeded" for i in (later, now)), "both jobs ran")
        got = open(f"{outdir}/later").read() if os.path.exists(f"{outdir}/later") else ""
        c.check(got == f"{secret} {from_file}", "the job submitted before the restart had both secrets in its environment")
        got = open(f"{outdir}/now").read() if os.path.exists(f"{outdir}/now") else ""
        c.check(got == secret, "the job had its secret in its environment")

        surfaces = {}
        for path in ("/v1/jobs?limit=1000", f"/v1/jobs/{later}", f"/v1/jobs/{now}", f"/v1/jobs/{now}/explain",
                     "/v1/events?since=0&limit=10000", "/metrics", "/v1/health", "/", "/v1/nodes"):
            status, body = pool.call("GET", path)
            surfaces["GET " + path] = body if isinstance(body, str) else json.dumps(body)
        status, body = pool.call("GET", f"/v1/jobs/{later}")
        c.check(body.get("secrets") == ["API_KEY", "DB_PASSWORD"] or sorted(body.get("secrets", [])) == ["API_KEY", "DB_PASSWORD"],
                f"the API shows the secrets' names only: {body.get('secrets')}")
        for args in (("job", later), ("job", now), ("jobs",), ("jobs", "--json"), ("events",), ("events", "--json"),
                     ("explain", now), ("logs", now), ("logs", now, "--stderr")):
            r = pool.cli(*args)
            surfaces["gpupool " + " ".join(args)] = r.stdout + r.stderr
        second = pool.server
        pool.stop_server()
        surfaces["the server's output (both runs)"] = server_out + second.stdout.read()
        for p in [f"{pool.dir}/agent.log"] + glob.glob(f"{pool.dir}/server/logs/**/*", recursive=True):
            if os.path.isfile(p):
                surfaces[p] = open(p, errors="replace").read()
        stored = b"".join(open(p, "rb").read() for p in glob.glob(f"{pool.dir}/server/gpupool.db*"))
        surfaces["store"] = stored.decode(errors="replace")
        leaks = [name for name, text in surfaces.items() if secret in text or from_file in text]
        c.check(not leaks, f"the secrets appear on none of {len(surfaces)} surfaces: {leaks}")
    finally:
        pool.stop()
    return c.done()


if __name__ == "__main__":
    sys.exit(main())
