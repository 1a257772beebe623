"""Bad input: each gets a 4xx whose message names the problem, and the server stays up."""
import http.server
import json
import os
import re
import subprocess
import sys
import threading

from pool import Checks, Pool


def main(gpupool):
    c = Checks()
    pool = Pool(gpupool)
    try:
        pool.start_server("--checkpoint-max-mib", "3")
        join = open(f"{pool.dir}/server/join.token").read().strip()
        # A node registered by hand: its own credential opens the agent endpoints.
        status, reg = pool.call("POST", "/v1/agent/register", {"name": "probe"}, token=join)
        node = reg.get("credential", "") if isinstance(reg, dict) else ""
        c.check(status == 200 and len(node) == 64, f"registration issues a credential ({status} {reg})")
        cases = [
            # (what, method, path, raw body, token, want status, want text in the error)
            ("malformed JSON", "POST", "/v1/jobs", b'{"command": ["true"', "default", 400, "malformed JSON"),
            ("not an object", "POST", "/v1/jobs", b'[1, 2]', "default", 400, "expected a JSON object"),
            ("unknown field", "POST", "/v1/jobs", b'{"command": ["true"], "gpu": 1}', "default", 400, "unknown field 'gpu'"),
            ("negative GPUs", "POST", "/v1/jobs", b'{"command": ["true"], "gpus": -1}', "default", 400, "field 'gpus': must be 0..16"),
            ("absurd GPUs", "POST", "/v1/jobs", b'{"command": ["true"], "gpus": 100000}', "default", 400, "field 'gpus': must be 0..16"),
            ("GPUs as text", "POST", "/v1/jobs", b'{"command": ["true"], "gpus": "two"}', "default", 400, "field 'gpus': expected a whole number"),
            ("absurd tasks", "POST", "/v1/jobs", b'{"command": ["true"], "tasks": 0}', "default", 400, "field 'tasks'"),
            ("no command", "POST", "/v1/jobs", b'{"gpus": 1}', "default", 400, "field 'command': required"),
            ("empty command", "POST", "/v1/jobs", b'{"command": []}', "default", 400, "field 'command'"),
            ("bad memory", "POST", "/v1/jobs", b'{"command": ["true"], "memory": "lots"}', "default", 400, "field 'memory'"),
            ("unknown data site", "POST", "/v1/jobs", b'{"command": ["true"], "data": {"site": "mars", "size": "1GB"}}', "default", 400, "unknown site 'mars'"),
            ("oversized body", "POST", "/v1/jobs", b'{"command": ["' + b"x" * (2 << 20) + b'"]}', "default", 413, "over"),
            ("unknown job", "GET", "/v1/jobs/999999", None, "default", 404, "no job '999999'"),
            ("job id not a number", "GET", "/v1/jobs/abc", None, "default", 404, "no job 'abc'"),
            ("cancel unknown job", "POST", "/v1/jobs/424242/cancel", None, "default", 404, "no job"),
            ("unknown node", "POST", "/v1/nodes/nowhere/drain", None, "default", 404, "no node 'nowhere'"),
            ("bad state filter", "GET", "/v1/jobs?state=sleeping", None, "default", 400, "unknown job state 'sleeping'"),
            ("unknown endpoint", "GET", "/v1/teapot", None, "default", 404, "no such endpoint"),
            ("no token", "GET", "/v1/jobs", None, None, 401, "bearer token"),
            ("wrong token", "GET", "/v1/jobs", None, "not-the-token", 401, "bearer token"),
            ("agent token on user API", "GET", "/v1/jobs", None, "JOIN", 401, "agents only"),
            ("malformed heartbeat", "POST", "/v1/agent/heartbeat", b'{"node": 5', "NODE", 400, "malformed JSON"),
            ("heartbeat with the join token", "POST", "/v1/agent/heartbeat", b'{"node": "probe"}', "JOIN", 401, "only registers"),
            ("heartbeat in another node's name", "POST", "/v1/agent/heartbeat", b'{"node": "ghost"}', "NODE", 403, "node 'probe'"),
            ("checkpoint of an unknown job (2 MiB: over the API's limit, within the checkpoints')", "PUT",
             "/v1/agent/checkpoints/999/0?attempt=1", b"x" * (2 << 20), "NODE", 404, "no job 999"),
            ("checkpoint over --checkpoint-max-mib", "PUT", "/v1/agent/checkpoints/999/0?attempt=1", b"x" * (4 << 20), "NODE", 413, "over"),
            ("checkpoint without its attempt", "PUT", "/v1/agent/checkpoints/999/0", b"x", "NODE", 400, "attempt"),
            ("checkpoint of task 'x'", "GET", "/v1/agent/checkpoints/999/x", None, "NODE", 404, "no checkpoint '999/x'"),
            ("checkpoint with the join token", "GET", "/v1/agent/checkpoints/999/0", None, "JOIN", 401, "only registers"),
            ("checkpoint through the user token path", "GET", "/v1/jobs/999/checkpoint", None, "default", 404, "no job"),
            ("GPU check on an unknown node", "POST", "/v1/nodes/nowhere/gpus/0/check", None, "default", 404, "no node 'nowhere'"),
            ("self-test result without 'passed'", "POST", "/v1/agent/heartbeat", b'{"node": "probe", "selftests": [{"gpu": 0}]}',
             "NODE", 400, "field 'selftests'"),
            ("register with 17 GPUs", "POST", "/v1/agent/register",
             b'{"name": "big", "gpus": [' + b",".join(b'{"index": %d}' % i for i in range(17)) + b"]}", "JOIN", 400, "at most 16"),
        ]
        for what, method, path, raw, token, want, text in cases:
            status, body = pool.call(method, path, raw=raw, token={"JOIN": join, "NODE": node}.get(token, token))
            message = body.get("error", "") if isinstance(body, dict) else str(body)
            c.check(status == want, f"{what}: HTTP {status}, want {want} ({message})")
            c.check(text in message, f"{what}: message {message!r} lacks {text!r}")
        status, body = pool.call("GET", "/v1/health")
        c.check(status == 200 and body.get("status") == "ok", "the server is still up")
        # The server's output names where the tokens are and never prints the admin token; its
        # dashboard link carries a one-time code.
        banner = ""
        while "dashboard" not in banner:
            line = pool.server.stdout.readline()
            if not line:
                break
            banner += line
        secret = join.split(".")[0]
        c.check(pool.token not in banner and secret not in banner, f"no token printed whole: {banner!r}")
        m = re.search(r"\?code=([0-9a-f]+)", banner)
        c.check(m is not None, f"the dashboard link carries a code: {banner!r}")
        if m:
            req = f"GET /?code={m.group(1)} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
            status, got = pool.raw(req)
            c.check(status == 303 and pool.token.encode() in got and b"HttpOnly" in got, f"the code signs in once ({status})")
            status, got = pool.raw(req)
            c.check(status == 401, f"... and only once ({status})")
        # A lying server (or a record from before names were checked): the CLI's tables show
        # control characters as \xNN, never as terminal escape sequences.
        evil = "\x1b]0;pwned\x07\x1b[2J"
        node = {"name": "n" + evil, "state": "ready", "model": "H100", "gpus": [], "free_gpus": 0, "cpu_cores": 1,
                "memory_mib": 1024, "site": evil, "provider": "p", "price_per_gpu_hour": 1.0}

        class Liar(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = json.dumps({"nodes": [node]}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        liar = http.server.HTTPServer(("127.0.0.1", 0), Liar)
        threading.Thread(target=liar.serve_forever, daemon=True).start()
        out = subprocess.run([gpupool, "nodes"], capture_output=True, text=True, timeout=10,
                             env=dict(os.environ, GPUPOOL_ADDR=f"127.0.0.1:{liar.server_port}", GPUPOOL_TOKEN="x"))
        liar.shutdown()
        c.check("\x1b" not in out.stdout and "\x07" not in out.stdout and "\\x1b]0;pwned" in out.stdout,
                f"`gpupool nodes` escapes control characters: {out.stdout!r}")
        # One checkpoint limit for both sides: the agent learns the server's (3 MiB here) and
        # refuses to pack more, saying so in the task's stderr; nothing is stored and lost later.
        pool.start_agent("ck", "1xH100")
        pool.wait_nodes(2)
        big = pool.submit(["sh", "-c", 'head -c 5000000 /dev/zero > "$GPUPOOL_CHECKPOINT_DIR/big"; exit 0'], gpus=1)
        done = pool.wait_jobs([big], timeout=30)[big]
        status, err = pool.call("GET", f"/v1/jobs/{big}/logs?task=0&stream=stderr")
        c.check(done["state"] == "succeeded" and "over the pool's limit of 3145728 bytes" in str(err),
                f"a 5 MB checkpoint under a 3 MiB limit is refused at its node, in its stderr ({done['state']}: {err!r})")
        # Listings come in pages of at most 1,000: the CLI and the helpers read on through `next`.
        for _ in range(1200):
            pool.call("POST", "/v1/jobs", {"command": ["true"], "gpus": 16})  # never fits: stays queued, cheaply
        status, page = pool.call("GET", "/v1/jobs?limit=1000")
        c.check(status == 200 and len(page["jobs"]) == 1000 and "next" in page, f"a page of 1,000 with a cursor ({status})")
        everything = pool.all_jobs()
        c.check(len(everything) == len({j["id"] for j in everything}) >= 1200, f"paging reads every job once ({len(everything)})")
        env = dict(os.environ, GPUPOOL_ADDR=f"127.0.0.1:{pool.port}", GPUPOOL_TOKEN=pool.token)
        out = subprocess.run([gpupool, "jobs", "--limit", "1100", "--json"], capture_output=True, text=True, env=env, timeout=30)
        got = json.loads(out.stdout)["jobs"] if out.returncode == 0 else []
        c.check(len(got) == 1100 and len({j["id"] for j in got}) == 1100, f"`gpupool jobs --limit 1100` reads two pages ({len(got)})")
        ok = pool.submit(["true"], gpus=0)
        status, body = pool.call("GET", f"/v1/jobs/{ok}")
        c.check(status == 200 and body["id"] == ok, "a good job after all that is accepted")
    finally:
        pool.stop()
    return c.done()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
