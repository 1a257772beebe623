"""Helpers for the end-to-end tests: start a real gpupool server and agents on loopback, talk
to the REST API, and stop everything afterwards. Standard library only."""
import base64
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


_NO_REDIRECT = urllib.request.build_opener(NoRedirect)


def http(method, url, body=None, token=None, timeout=5):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    req.add_header("Content-Type", "application/json")
    try:
        with _NO_REDIRECT.open(req, timeout=timeout) as r:
            text, status = r.read().decode(), r.status
    except urllib.error.HTTPError as e:
        text, status = e.read().decode(), e.code
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def leader_of(ports, procs):
    """The index of the server (of several on one store) that says it leads (GET /v1/leader), or None."""
    for i, port in enumerate(ports):
        if procs[i] is None or procs[i].poll() is not None:
            continue
        try:
            status, body = http("GET", f"http://127.0.0.1:{port}/v1/leader", timeout=1)
            if status == 200 and body.get("role") == "leader":
                return i
        except OSError:
            pass
    return None


class Etcd:
    """Three etcd members (Debian's etcd-server) on loopback."""

    def __init__(self, base, n=3):
        self.base = base
        self.names = [f"e{i}" for i in range(n)]
        self.client = [free_port() for _ in self.names]
        self.peer = [free_port() for _ in self.names]
        self.cluster = ",".join(f"{nm}=http://127.0.0.1:{p}" for nm, p in zip(self.names, self.peer))
        self.procs = [None] * n
        for i in range(n):
            self.start(i, "new")
        self.wait_healthy()

    def start(self, i, state):
        c, p = f"http://127.0.0.1:{self.client[i]}", f"http://127.0.0.1:{self.peer[i]}"
        log = open(f"{self.base}/{self.names[i]}.log", "a")
        self.procs[i] = subprocess.Popen(
            ["etcd", "--name", self.names[i], "--data-dir", f"{self.base}/{self.names[i]}", "--listen-client-urls", c,
             "--advertise-client-urls", c, "--listen-peer-urls", p, "--initial-advertise-peer-urls", p,
             "--initial-cluster", self.cluster, "--initial-cluster-state", state, "--initial-cluster-token", "gpupool-ha",
             "--log-level", "error"], stdout=log, stderr=log)

    def endpoints(self):
        return ",".join(f"127.0.0.1:{p}" for p in self.client)

    def wait_healthy(self, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            ok = 0
            for i, p in enumerate(self.client):
                if self.procs[i] is None or self.procs[i].poll() is not None:
                    continue
                try:
                    status, body = http("GET", f"http://127.0.0.1:{p}/health", timeout=1)
                    ok += status == 200 and str(body.get("health")) == "true"
                except OSError:
                    pass
            if ok == sum(1 for pr in self.procs if pr and pr.poll() is None):
                return
            time.sleep(0.1)
        raise RuntimeError("etcd is not healthy")

    def leader(self):
        for i, p in enumerate(self.client):
            if self.procs[i].poll() is not None:
                continue
            try:
                status, body = http("POST", f"http://127.0.0.1:{p}/v3/maintenance/status", {}, timeout=2)
                if status == 200 and body["header"]["member_id"] == body["leader"]:
                    return i
            except (OSError, KeyError):
                pass
        return None

    def range_prefix(self, prefix):
        """Every key and value under `prefix`, from any live member."""
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        for i, p in enumerate(self.client):
            if self.procs[i].poll() is not None:
                continue
            status, body = http("POST", f"http://127.0.0.1:{p}/v3/kv/range", {
                "key": base64.b64encode(prefix.encode()).decode(), "range_end": base64.b64encode(end.encode()).decode()}, timeout=10)
            if status == 200:
                return {base64.b64decode(kv["key"]).decode(): base64.b64decode(kv.get("value", "")).decode()
                        for kv in body.get("kvs", [])}
        raise RuntimeError("no etcd member answered")

    def stop(self):
        for p in self.procs:
            if p and p.poll() is None:
                p.kill()
                p.wait()



class Pool:
    def __init__(self, gpupool, data_dir=None):
        self.gpupool = gpupool
        self.dir = data_dir or tempfile.mkdtemp(prefix="gpupool-e2e-")
        self.port = free_port()
        self.server = None
        self.agents = []
        self.token = None

    def shared_dir(self, path):
        """A directory jobs may write to: they run as an unprivileged user (nobody) when the
        agent is root, so it is world-writable, and the pool's directory is passable (0711)."""
        os.chmod(self.dir, 0o711)
        os.makedirs(path, exist_ok=True)
        os.chmod(path, 0o777)
        return path

    def start_server(self, *extra):
        self.server_extra = extra or getattr(self, "server_extra", ())
        self.server = subprocess.Popen(
            [self.gpupool, "server", "--listen", f"127.0.0.1:{self.port}", "--data-dir", f"{self.dir}/server",
             *self.server_extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=getattr(self, "server_preexec", None))
        line = self.server.stdout.readline()
        if "listening" not in line:
            raise RuntimeError(f"server did not start: {line}{self.server.stdout.read()}")
        self.token = open(f"{self.dir}/server/admin.token").read().strip()
        if any(str(a).startswith("etcd://") for a in self.server_extra):
            # Several servers may share the store: this one serves once elected.
            deadline = time.time() + 20
            while time.time() < deadline:
                status, body = http("GET", f"http://127.0.0.1:{self.port}/v1/leader", timeout=2)
                if status == 200 and body.get("role") == "leader":
                    break
                time.sleep(0.05)
        return self

    def start_agent(self, name, gpus, interval="200ms", server=None, prefix=(), extra=(), metrics="off", work=None,
                    env=None, cwd=None, stderr=subprocess.DEVNULL):
        os.chmod(self.dir, 0o711)  # tasks (as nobody) pass through to their directories, as under /var/lib
        p = subprocess.Popen(
            [*prefix, os.path.abspath(self.gpupool), "agent", "--server", server or f"127.0.0.1:{self.port}", "--join-token-file",
             f"{self.dir}/server/join.token", "--simulate-gpus", gpus, "--name", name,
             "--work-dir", work or f"{self.dir}/agents/{name}", "--interval", interval, "--metrics-listen", metrics, *extra],
            stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True, env=env, cwd=cwd, text=True)
        self.agents.append(p)
        return p

    def credential(self, name, timeout=10):
        """The node credential agent `name` keeps in its work directory (written just after the
        server registered the node, so it may lag the node's "ready" by a moment)."""
        path = f"{self.dir}/agents/{name}/node.credential"
        deadline = time.time() + timeout
        while not os.path.exists(path) and time.time() < deadline:
            time.sleep(0.05)
        return open(path).read().strip()

    def raw(self, data, timeout=10):
        """Sends raw bytes on a connection of its own; returns (status or None, the whole answer)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            try:
                s.sendall(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server answered early (401, 413) and closed: read what it said
            got = b""
            try:
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    got += chunk
                    head, _, body = got.partition(b"\r\n\r\n")
                    m = re.search(rb"content-length: *(\d+)", head, re.I)
                    if m and len(body) >= int(m.group(1)):
                        break
            except (socket.timeout, ConnectionResetError):
                pass
        m = re.match(rb"HTTP/1\.1 (\d+)", got)
        return (int(m.group(1)) if m else None), got

    def wait_nodes(self, n, timeout=20):
        deadline = time.time() + timeout
        while time.time() < deadline:
            status, body = self.call("GET", "/v1/node-groups")
            if status == 200 and sum(g["states"]["ready"] for g in body["groups"]) >= n:
                return
            time.sleep(0.1)
        raise RuntimeError(f"{n} nodes did not register")

    def call(self, method, path, body=None, token="default", raw=None, timeout=30):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method)
        tok = self.token if token == "default" else token
        if tok:
            req.add_header("Authorization", f"Bearer {tok}")
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                text = r.read().decode(errors="replace")
                status = r.status
        except urllib.error.HTTPError as e:
            text = e.read().decode(errors="replace")
            status = e.code
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    def submit_retrying(self, body):
        """Submits until the server acknowledges (it may be away, restarting); returns the id."""
        while True:
            try:
                status, res = self.call("POST", "/v1/jobs", body, timeout=5)
                if status == 201:
                    return res["id"]
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.05)  # the server is away: try again

    def submit(self, command, **fields):
        status, body = self.call("POST", "/v1/jobs", {"command": command, **fields})
        if status != 201:
            raise RuntimeError(f"submit failed: {status} {body}")
        return body["id"]

    def all_jobs(self, query=""):
        """Every job, newest first, read page by page (at most 1,000 a page) through `next`."""
        jobs, cursor = [], ""
        while True:
            status, body = self.call("GET", f"/v1/jobs?limit=1000{query}{cursor}")
            if status != 200:
                raise RuntimeError(f"GET /v1/jobs: {status} {body}")
            jobs += body["jobs"]
            if "next" not in body:
                return jobs
            cursor = f"&before={body['next']}"

    def all_events(self, since=0):
        """Every stored event after `since`, read page by page."""
        events = []
        while True:
            status, body = self.call("GET", f"/v1/events?since={since}&limit=10000")
            if status != 200:
                raise RuntimeError(f"GET /v1/events: {status} {body}")
            page = [json.loads(line) for line in (body if isinstance(body, str) else json.dumps(body)).splitlines() if line.strip()]
            if not page:
                return events
            events += page
            since = page[-1]["sequence"]

    def wait_jobs(self, ids, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            jobs = {j["id"]: j for j in self.all_jobs()}
            if all(jobs.get(i, {}).get("state") in ("succeeded", "failed", "cancelled", "timed-out") for i in ids):
                return jobs
            time.sleep(0.1)
        raise RuntimeError("jobs did not finish: " + ", ".join(
            f"{i}:{jobs.get(i, {}).get('state')}" for i in ids if jobs.get(i, {}).get("state") not in ("succeeded", "failed", "cancelled", "timed-out")))

    def cli(self, *args):
        """Runs `gpupool ARGS` against this pool with the admin token; the CompletedProcess."""
        return subprocess.run([self.gpupool, *args, "--server", f"127.0.0.1:{self.port}", "--token", self.token],
                              capture_output=True, text=True)

    def stop_server(self):
        self.server.terminate()
        self.server.wait(timeout=20)

    def kill_server(self):
        self.server.kill()
        self.server.wait()

    def local_instances(self, provider="lab"):
        """What the server's `local` provisioner for `provider` holds (instances.json): id -> record."""
        try:
            with open(f"{self.dir}/server/provisioners/{provider}/instances.json") as f:
                return json.load(f)["instances"]
        except (OSError, ValueError, KeyError):
            return {}

    def kill_local_instances(self):
        """Agents the server's `local` provisioners started live in sessions of their own (as
        cloud machines outlive the server): stop any left behind."""
        try:
            providers = os.listdir(f"{self.dir}/server/provisioners")
        except OSError:
            return
        for provider in providers:
            for i in self.local_instances(provider).values():
                try:
                    os.killpg(i["pid"], signal.SIGKILL)
                except (ProcessLookupError, PermissionError, KeyError):
                    pass

    def stop(self):
        for p in [self.server, *self.agents]:
            if p and p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM) if p in self.agents else p.terminate()
                except ProcessLookupError:
                    pass
        for p in [self.server, *self.agents]:
            if p:
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
        self.kill_local_instances()


class Checks:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, ok, what):
        if ok:
            self.passed += 1
        else:
            self.failed += 1
            print(f"FAIL {what}", flush=True)

    def done(self):
        print(f"{self.passed} passed, {self.failed} failed")
        return 0 if self.failed == 0 else 1
