"""Bad input: each gets a 4xx whose message names the problem, and the server stays up."""
import sys

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
        ok = pool.submit(["true"], gpus=0)
        status, body = pool.call("GET", f"/v1/jobs/{ok}")
        c.check(status == 200 and body["id"] == ok, "a good job after all that is accepted")
    finally:
        pool.stop()
    return c.done()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
