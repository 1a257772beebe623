"""Hostile input: what careless and hostile clients, agents and jobs send, each answered with
the right status while the server stays up, keeps answering GET /v1/health in under 100 ms
(p99) throughout, and restarts or fails none of the jobs running meanwhile.

The server runs under `ulimit -n 1024`, as a default install would, so the connection cases
meet the real file-descriptor limit."""
import json
import os
import resource
import socket
import subprocess
import sys
import time

from pool import Checks, Pool

MIB = 1 << 20


def rss_mib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0


PROBE = r"""
import sys, time, urllib.request
port, token = sys.argv[1], sys.argv[2]
while True:
    t0 = time.monotonic()
    try:
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/health", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            r.read()
            ok = r.status == 200
    except Exception as e:
        ok = False
    print(f"{time.monotonic() - t0 if ok else 10.0:.6f}", flush=True)
    time.sleep(0.02)
"""


class HealthProbe:
    """GET /v1/health every 20 ms on a new connection, as a load balancer would, from a process of
    its own (so the test's own work cannot delay it); a failed answer counts as 10 s."""

    def __init__(self, pool):
        self.proc = subprocess.Popen([sys.executable, "-c", PROBE, str(pool.port), pool.token], stdout=subprocess.PIPE, text=True)
        self.latencies = []

    def stop_and_read(self):
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=10)
        self.latencies = [float(x) for x in out.split()]
        return self.latencies

    def p99(self):
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, int(len(xs) * 0.99))] if xs else 0


def request(method, target, token=None, body=b"", headers=()):
    head = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    if token:
        head.append(f"Authorization: Bearer {token}")
    head += list(headers)
    if body or method in ("POST", "PUT"):
        head.append(f"Content-Length: {len(body)}")
    data = ("\r\n".join(head) + "\r\n\r\n").encode() if isinstance(target, str) else None
    return data + body


def raw_target(method, target_bytes, token):
    return (method.encode() + b" " + target_bytes + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer "
            + token.encode() + b"\r\n\r\n")


def main(gpupool):
    c = Checks()
    pool = Pool(gpupool)
    pool.server_preexec = lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))
    probe = None
    try:
        pool.start_server("--checkpoint-max-mib", "400", "--header-timeout", "3s")
        out = pool.shared_dir(os.path.join(pool.dir, "out"))
        pool.start_agent("alpha", "2xH100")
        pool.start_agent("beta", "2xH100")
        pool.wait_nodes(2)
        join = open(f"{pool.dir}/server/join.token").read().strip()
        alpha, beta = pool.credential("alpha"), pool.credential("beta")
        # Work that must live through everything below: one job on each node until told to stop.
        runners = [pool.submit(["sh", "-c", f"while [ ! -e {out}/stop ]; do sleep 0.1; done"], gpus=2, name=f"keep-{i}")
                   for i in range(2)]
        deadline = time.time() + 20
        while time.time() < deadline:
            states = [pool.call("GET", f"/v1/jobs/{j}")[1]["state"] for j in runners]
            if states == ["running", "running"]:
                break
            time.sleep(0.1)
        placed = {j: pool.call("GET", f"/v1/jobs/{j}")[1]["node"] for j in runners}
        on_alpha = next(j for j, n in placed.items() if n == "alpha")
        on_beta = next(j for j, n in placed.items() if n == "beta")
        c.check(set(placed.values()) == {"alpha", "beta"}, f"one runner on each node ({placed})")
        probe = HealthProbe(pool)
        # A slow client (slowloris): half a header, then silence. Closed after --header-timeout.
        slow = socket.create_connection(("127.0.0.1", pool.port), timeout=30)
        slow.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n")
        slow_since = time.monotonic()
        admin = pool.token

        # --- bytes that are not UTF-8, in a path or a query ---
        for what, target, token in [
                ("a byte 0xff in a job's path", b"/v1/jobs/\xff", admin),
                ("a byte 0xff in a node's path", b"/v1/nodes/\xff", admin),
                ("%ff in a query", b"/v1/jobs?state=%ff", admin),
                ("a byte 0xff in a checkpoint's path", b"/v1/agent/checkpoints/\xff/0", alpha)]:
            status, got = pool.raw(raw_target("GET", target, token))
            c.check(status == 400 and b"UTF-8" in got, f"{what}: {status}, want 400 naming UTF-8 ({got[-120:]!r})")

        status, got = pool.raw(raw_target("GET", b"/v1/agent/checkpoints/%ff/0", alpha))
        c.check(status == 404 and b"%ff/0" in got, f"%ff in a path (not decoded there): {status}, want 404 naming it")

        # --- HTTP's own limits ---
        status, _ = pool.raw(request("GET", "/v1/jobs/" + "9" * 9000, admin))
        c.check(status == 414, f"a 9 KB URL: {status}, want 414")
        status, _ = pool.raw(request("GET", "/v1/health", admin, headers=["X-Padding: " + "a" * 20000]))
        c.check(status == 431, f"a 20 KB header: {status}, want 431")
        status, _ = pool.raw(b"\x16\x03\x01\x00\xa5 not HTTP at all\r\n\r\n")
        c.check(status in (None, 400), f"bytes that are not HTTP: the connection is dropped or refused ({status})")

        # --- memory before authentication: four 1,000 MiB uploads without a token ---
        socks, answers = [], []
        for _ in range(4):
            s = socket.create_connection(("127.0.0.1", pool.port), timeout=10)
            s.sendall(b"PUT /v1/agent/checkpoints/1/0?attempt=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576000\r\n\r\n"
                      + b"x" * 65536)
            socks.append(s)
        for s in socks:
            try:
                answers.append(s.recv(200))
            except OSError as e:
                answers.append(repr(e).encode())
            s.close()
        c.check(all(a.startswith(b"HTTP/1.1 401") for a in answers), f"unauthenticated 1,000 MiB uploads get 401 at once ({answers[0][:40]!r})")
        rss = rss_mib(pool.server.pid)
        c.check(rss < 200, f"the server reserved nothing for them: {rss:.0f} MiB resident")

        # --- bounded work per request ---
        many = "{" + ",".join(f'"k{i}":1' for i in range(95_000)) + "}"
        t0 = time.monotonic()
        status, body = pool.call("POST", "/v1/jobs", raw=many.encode())
        dt = time.monotonic() - t0
        c.check(status == 400 and "unknown field" in str(body), f"1 MiB object of 95,000 keys: {status} ({str(body)[:80]})")
        c.check(dt < 1.0, f"... answered in {dt * 1000:.0f} ms (parsing is linear)")
        status, body = pool.call("POST", "/v1/jobs", raw=b"[" * 100_000 + b"]" * 100_000)
        c.check(status == 400 and "nested deeper" in str(body), f"100,000 levels of nesting: {status} ({str(body)[:80]})")
        status, body = pool.call("GET", "/v1/jobs?limit=100000")
        c.check(status == 400 and "limit" in str(body), f"a page of 100,000 jobs: {status}, want 400 (pages of at most 1,000)")
        status, body = pool.call("GET", "/v1/events?since=0&limit=100000")
        c.check(status == 400 and "limit" in str(body), f"a page of 100,000 events: {status}, want 400")
        # A 300 MiB checkpoint of a running job, from its own node: streamed to disk.
        blob = b"\0" * (300 * MIB)
        status, got = pool.raw(request("PUT", f"/v1/agent/checkpoints/{on_alpha}/0?attempt=1", alpha, blob,
                                       headers=["Content-Type: application/x-tar"]), timeout=60)
        del blob
        c.check(status == 200, f"a 300 MiB checkpoint upload is stored: {status} ({got[-100:]!r})")
        rss = rss_mib(pool.server.pid)
        c.check(rss < 200, f"... without holding it in memory: {rss:.0f} MiB resident")
        status, got = pool.raw(request("PUT", f"/v1/agent/checkpoints/{on_alpha}/0?attempt=1", alpha, b"x" * (401 * MIB)),
                               timeout=60)
        c.check(status == 413, f"a checkpoint over --checkpoint-max-mib: {status}, want 413")

        # --- integers and text that once wrapped or were cut short ---
        for what, body, text in [
                ("priority 2^64-1", b'{"command":["true"],"priority":18446744073709551615}', "priority"),
                ("a NUL in the command", b'{"command":["sh","-c","echo a\\u0000b"]}', "NUL"),
                ("a workdir outside the task", b'{"command":["true"],"workdir":"/etc"}', "workdir"),
                ("a workdir climbing out", b'{"command":["true"],"workdir":"../../x"}', "workdir"),
                ("a name with escapes", b'{"command":["true"],"name":"\\u001b[2J"}', "control character")]:
            status, got = pool.call("POST", "/v1/jobs", raw=body)
            c.check(status == 400 and text in str(got), f"{what}: {status}, want 400 naming {text!r} ({got})")
        status, got = pool.call("POST", "/v1/nodes/alpha/gpus/0/xid", {"xid": 4294967375})
        c.check(status == 400 and "xid" in str(got), f"XID 4294967375: {status}, want 400 ({got})")
        status, got = pool.call("GET", f"/v1/jobs/{on_alpha}/logs?task=x")
        c.check(status == 400, f"a task index that is not a number: {status}")

        # --- 300 tasks asking no GPU do not pile onto one 2-core node ---
        status, got = pool.call("POST", "/v1/jobs", {"command": ["sleep", "60"], "tasks": 300, "name": "wide"})
        wide = got["id"]
        time.sleep(0.5)
        job = pool.call("GET", f"/v1/jobs/{wide}")[1]
        why = pool.call("GET", f"/v1/jobs/{wide}/explain")[1]
        c.check(job["state"] == "queued" and "fit at once" in str(why),
                f"a gang of 300 CPU-only tasks waits for task slots ({job['state']}: {why})")
        pool.call("POST", f"/v1/jobs/{wide}/cancel")

        # --- the join token no longer speaks for nodes; a node speaks only for itself ---
        status, got = pool.call("POST", "/v1/agent/heartbeat", {"node": "alpha"}, token=join)
        c.check(status == 401, f"a heartbeat with the join token: {status}, want 401")
        status, got = pool.call("POST", "/v1/agent/heartbeat", {"node": "alpha"}, token=beta)
        c.check(status == 403 and "'beta'" in str(got), f"beta's credential in alpha's name: {status}, want 403 ({got})")
        forged = {"node": "beta", "tasks": [{"job": int(on_alpha), "task": 0, "attempt": 1, "state": "exited",
                                             "exit_code": 0, "stdout_b64": "Zm9yZ2Vk"}],
                  "running": [[int(on_beta), 0, 1]]}  # beta's own job: a lie about others, not about itself
        status, got = pool.call("POST", "/v1/agent/heartbeat", forged, token=beta)
        job = pool.call("GET", f"/v1/jobs/{on_alpha}")[1]
        c.check(job["state"] == "running", f"beta's report that alpha's job succeeded changes nothing ({job['state']})")
        status, got = pool.raw(request("GET", f"/v1/agent/checkpoints/{on_alpha}/0", beta))
        c.check(status == 403, f"beta fetching alpha's job's checkpoint: {status}, want 403")
        status, got = pool.raw(request("PUT", f"/v1/agent/checkpoints/{on_alpha}/0?attempt=1", beta, b"forged"))
        c.check(status == 403, f"beta writing alpha's job's checkpoint: {status}, want 403")
        status, got = pool.call("POST", "/v1/agent/register", {"name": "alpha", "address": "10.9.9.9"}, token=join)
        c.check(status == 409 and "alpha" in str(got) and "10.9.9.9" in str(got) and "127.0.0.1" in str(got),
                f"registering a live node's name: {status}, want 409 naming both agents ({got})")
        status, got = pool.call("POST", "/v1/agent/register",
                                {"name": "huge", "gpus": [{"index": i, "memory_mib": 2 ** 63 - 1} for i in range(16)]}, token=join)
        c.check(status == 400 and "memory_mib" in str(got), f"16 GPUs of 2^63 MiB: {status}, want 400 ({got})")
        status, got = pool.call("POST", "/v1/agent/register", {"name": "\x1b]0;x\x07"}, token=join)
        c.check(status == 400 and "name" in str(got), f"a node name with terminal escapes: {status}, want 400")

        # --- 1,100 idle connections under ulimit -n 1024 ---
        idle = []
        for _ in range(1100):
            try:
                idle.append(socket.create_connection(("127.0.0.1", pool.port), timeout=5))
            except OSError:
                break
        time.sleep(1.0)
        t0 = time.monotonic()
        status, _ = pool.call("GET", "/v1/health", timeout=10)
        c.check(status == 200, f"with {len(idle)} idle connections open, a new client is answered ({status}, "
                               f"{(time.monotonic() - t0) * 1000:.0f} ms)")
        cpu0 = sum(os.times()[:2])
        stat = open(f"/proc/{pool.server.pid}/stat").read().split()
        busy0 = int(stat[13]) + int(stat[14])
        time.sleep(1.0)
        stat = open(f"/proc/{pool.server.pid}/stat").read().split()
        busy = (int(stat[13]) + int(stat[14]) - busy0) / os.sysconf("SC_CLK_TCK")
        c.check(busy < 0.5, f"... and the server does not spin ({busy * 100:.0f}% of a core)")
        for s in idle:
            s.close()
        time.sleep(0.3)

        # --- the slow client of the start ---
        try:
            slow.settimeout(max(0.1, 10 - (time.monotonic() - slow_since)))
            closed = slow.recv(100) == b""
        except OSError:
            closed = False
        c.check(closed, f"a client that stops halfway through its header is closed after --header-timeout "
                        f"({time.monotonic() - slow_since:.1f} s)")
        slow.close()

        # --- through all of it ---
        probe.stop_and_read()
        c.check(pool.server.poll() is None, "the server is still running")
        print(f"hostile: GET /v1/health p99 {probe.p99() * 1000:.1f} ms, max {max(probe.latencies) * 1000:.1f} ms over "
              f"{len(probe.latencies)} probes")
        failures = sum(1 for x in probe.latencies if x >= 10.0)
        c.check(probe.p99() < 0.1 and failures == 0,
                f"GET /v1/health p99 {probe.p99() * 1000:.0f} ms over {len(probe.latencies)} probes ({failures} failed)")
        nodes = {n["name"]: n["state"] for n in pool.call("GET", "/v1/nodes")[1]["nodes"]}
        c.check(nodes.get("alpha") == "ready" and nodes.get("beta") == "ready", f"both nodes ready ({nodes})")
        open(f"{out}/stop", "w").close()
        final = pool.wait_jobs(runners, timeout=30)
        for j in runners:
            c.check(final[j]["state"] == "succeeded" and final[j]["attempt"] == 1,
                    f"job {j} ran once to its end ({final[j]['state']}, attempt {final[j]['attempt']}: {final[j]['message']})")
    finally:
        if probe and probe.proc.poll() is None:
            probe.proc.kill()
        pool.stop()
    return c.done()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
