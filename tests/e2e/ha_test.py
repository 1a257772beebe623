"""Several servers on etcd (docs/live-pool.md), end to end: three etcd members and three gpupool
servers on loopback, two agents and the CLI given every server's address.

  1. kill -9 of the leader during 1,000 submissions and while jobs run: a standby leads and
     serves within 5 s (lease 3 s); every acknowledged job is there; no job ran twice; the jobs
     running at the time kept running (one start each, by their own marker files).
  2. Fencing: the leader is stopped (SIGSTOP) past its lease with a submission waiting in its
     socket; another leads and works; the old one is continued (SIGCONT): it exits (75) without
     its write landing (nothing of it in etcd) and no agent acts on anything from it.
  3. kill -9 of etcd's leader under load: acknowledged submissions resume within 3 s; nothing
     acknowledged is lost.
  4. The CLI and the agents, given all three addresses, work through every kill without a restart.
"""
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
from pool import Checks, Etcd, free_port, http, leader_of  # noqa: E402

LEASE_S = 3


class Servers:
    def __init__(self, gpupool, etcd, base, n=3):
        self.gpupool, self.etcd, self.base = gpupool, etcd, base
        self.ports = [free_port() for _ in range(n)]
        self.procs = [None] * n
        self.data = f"{base}/shared"  # every server's --data-dir: logs, checkpoints, the token files
        for i in range(n):
            self.start(i)
        self.token = None

    def start(self, i):
        log = open(f"{self.base}/server{i}.log", "a")
        self.procs[i] = subprocess.Popen(
            [self.gpupool, "server", "--store", "etcd://" + self.etcd.endpoints(), "--listen", f"127.0.0.1:{self.ports[i]}",
             "--data-dir", self.data, "--leader-ttl", f"{LEASE_S}s"], stdout=log, stderr=subprocess.STDOUT)

    def addresses(self):
        return ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def leader(self):
        """The index of the server that says it leads, or None."""
        return leader_of(self.ports, self.procs)

    def wait_serving(self, timeout=30, exclude=None):
        """Waits until a server (not `exclude`) leads and answers an authenticated read; its index."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            i = self.leader()
            if i is not None and i != exclude:
                try:
                    status, _ = http("GET", f"http://127.0.0.1:{self.ports[i]}/v1/jobs?limit=1", token=self.token, timeout=1)
                    if status == 200:
                        return i
                except OSError:
                    pass
            time.sleep(0.02)
        return None

    def call(self, method, path, body=None, timeout=20):
        """As a client given every address: the next server on a refusal, a standby's 503 or
        307, or a timeout; (status, body) of the first server that acts, or None at the deadline."""
        deadline = time.time() + timeout
        start = self.leader() or 0
        n = len(self.ports)
        k = 0
        while time.time() < deadline:
            i = (start + k) % n
            k += 1
            try:
                status, res = http(method, f"http://127.0.0.1:{self.ports[i]}{path}", body, self.token, timeout=2)
                if status in (307, 503):
                    time.sleep(0.02)
                    continue
                return status, res
            except (OSError, urllib.error.URLError):
                time.sleep(0.02)
        return None

    def all_jobs(self):
        """Every job, page by page (1,000 a page), from whichever server leads; {id: job}."""
        jobs, cursor = {}, ""
        while True:
            r = self.call("GET", f"/v1/jobs?limit=1000{cursor}", timeout=30)
            if not r or r[0] != 200:
                raise RuntimeError(f"GET /v1/jobs: {r}")
            jobs.update({j["id"]: j for j in r[1]["jobs"]})
            if "next" not in r[1]:
                return jobs
            cursor = f"&before={r[1]['next']}"

    def stop(self):
        for p in self.procs:
            if p and p.poll() is None:
                p.kill()
                p.wait()


def main():
    gpupool = os.path.abspath(sys.argv[1])
    base = tempfile.mkdtemp(prefix="gpupool-ha-")
    os.chmod(base, 0o711)
    marks = f"{base}/marks"
    os.makedirs(marks)
    os.chmod(marks, 0o777)
    c = Checks()
    etcd = Etcd(base)
    servers = Servers(gpupool, etcd, base)
    agents = []
    try:
        deadline = time.time() + 30
        while not os.path.exists(f"{servers.data}/admin.token") and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)
        servers.token = open(f"{servers.data}/admin.token").read().strip()
        first = servers.wait_serving()
        c.check(first is not None, "one of three servers leads")
        for name in ("a1", "a2"):
            agents.append(subprocess.Popen(
                [gpupool, "agent", "--server", servers.addresses(), "--join-token-file", f"{servers.data}/join.token",
                 "--simulate-gpus", "4xV100", "--name", name, "--work-dir", f"{base}/agents/{name}", "--interval", "200ms",
                 "--metrics-listen", "off"], stdout=subprocess.DEVNULL, stderr=open(f"{base}/{name}.log", "w"),
                start_new_session=True))
        deadline = time.time() + 20
        while time.time() < deadline:
            r = servers.call("GET", "/v1/node-groups")
            if r and r[0] == 200 and sum(g["states"]["ready"] for g in r[1]["groups"]) == 2:
                break
            time.sleep(0.1)
        cli_env = dict(os.environ, GPUPOOL_ADDR=servers.addresses(), GPUPOOL_TOKEN=servers.token)

        def cli(*args):
            return subprocess.run([gpupool, *args], capture_output=True, text=True, env=cli_env, timeout=60)

        # --- 1. kill -9 of the leader during 1,000 submissions and while jobs run ---
        long_ids = []
        for n in range(2):
            status, res = servers.call("POST", "/v1/jobs", {
                "name": f"long-{n}", "gpus": 1,
                "command": ["sh", "-c", f"echo $GPUPOOL_ATTEMPT >> {marks}/long-{n}; sleep 20"]})
            long_ids.append(res["id"])
        deadline = time.time() + 20
        while time.time() < deadline and not all(os.path.exists(f"{marks}/long-{n}") for n in range(2)):
            time.sleep(0.05)
        c.check(all(os.path.exists(f"{marks}/long-{n}") for n in range(2)), "the long jobs started")

        acked, lock = [], threading.Lock()
        ack_times = []

        def submitter(count, tag):
            for k in range(count):
                body = {"name": f"{tag}-{threading.get_ident()}-{k}",
                        "command": ["sh", "-c", f"echo $GPUPOOL_ATTEMPT >> {marks}/$GPUPOOL_JOB_ID"]}
                while True:
                    r = servers.call("POST", "/v1/jobs", body, timeout=30)
                    if r and r[0] == 201:
                        with lock:
                            acked.append(r[1]["id"])
                            ack_times.append(time.time())
                        break
                    if r is None:
                        break  # never acknowledged: not counted

        def load(per_thread, tag, until):
            """Eight submitters under way, once `until` submissions are acknowledged."""
            started = [threading.Thread(target=submitter, args=(per_thread, tag)) for _ in range(8)]
            for t in started:
                t.start()
            while len(acked) < until:
                time.sleep(0.01)
            return started

        threads = load(125, "s", 300)
        victim = servers.leader()
        t_kill = time.time()
        servers.procs[victim].kill()
        servers.procs[victim].wait()
        now_leader = servers.wait_serving(timeout=15, exclude=victim)
        failover = time.time() - t_kill
        print(f"leader killed after {len(acked)} acknowledged: server {now_leader} serves {failover:.2f} s later "
              f"(lease {LEASE_S} s)", flush=True)
        c.check(now_leader is not None and failover < 5.0, f"a new leader serves within 5 s of the kill ({failover:.2f} s)")
        for t in threads:
            t.join()
        c.check(len(acked) == 1000, f"1,000 submissions acknowledged ({len(acked)})")
        r = cli("jobs", "--limit", "5")
        c.check(r.returncode == 0, f"the CLI given three addresses works after the kill: {r.stderr[-300:]}")
        servers.start(victim)  # back, as a standby

        deadline = time.time() + 180
        jobs = {}
        while time.time() < deadline:
            jobs = servers.all_jobs()
            if all(jobs.get(i, {}).get("state") in ("succeeded", "failed", "cancelled") for i in acked + long_ids):
                break
            time.sleep(0.5)
        missing = [i for i in acked if i not in jobs]
        c.check(not missing, f"every acknowledged job is there ({len(missing)} missing)")
        c.check(len(set(acked)) == len(acked), "no id acknowledged twice")
        not_done = [i for i in acked if jobs.get(i, {}).get("state") != "succeeded"]
        c.check(not not_done, f"every job succeeded ({len(not_done)} did not: {[jobs.get(i, {}).get('state') for i in not_done[:5]]})")
        twice = [i for i in acked if os.path.exists(f"{marks}/{i}") and len(open(f"{marks}/{i}").read().split()) != 1]
        c.check(not twice, f"no job ran twice ({twice[:5]})")
        never = [i for i in acked if not os.path.exists(f"{marks}/{i}")]
        c.check(not never, f"every job ran ({len(never)} never did)")
        for n, i in enumerate(long_ids):
            starts = open(f"{marks}/long-{n}").read().split()
            c.check(starts == ["1"], f"running job {i} kept running through the failover (started {starts})")
            c.check(jobs.get(i, {}).get("state") == "succeeded" and jobs[i].get("attempt") == 1,
                    f"running job {i} succeeded in its first attempt ({jobs.get(i, {}).get('state')}, {jobs.get(i, {}).get('attempt')})")

        # --- 2. fencing: a stopped leader continued after another took over ---
        old = servers.wait_serving()
        old_port = servers.ports[old]
        servers.procs[old].send_signal(signal.SIGSTOP)
        t_stop = time.time()
        # A submission waits in its socket: the old leader will see it when it runs again.
        past = socket.create_connection(("127.0.0.1", old_port), timeout=30)
        payload = json.dumps({"name": "from-the-past", "command": ["true"]}).encode()
        past.sendall(b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + servers.token.encode() +
                     b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(payload)).encode() + b"\r\n\r\n" + payload)
        new = servers.wait_serving(timeout=15, exclude=old)
        c.check(new is not None, f"another server leads while the old one is stopped ({time.time() - t_stop:.2f} s)")
        status, res = servers.call("POST", "/v1/jobs", {"name": "under-new", "command": ["true"]})
        work_id = res.get("id") if status == 201 else None
        deadline = time.time() + 20
        while time.time() < deadline:
            r = servers.call("GET", f"/v1/jobs/{work_id}")
            if r and r[0] == 200 and r[1]["state"] == "succeeded":
                break
            time.sleep(0.1)
        c.check(r and r[0] == 200 and r[1]["state"] == "succeeded", "the new leader works (a job ran to its end)")
        if not (r and r[0] == 200 and r[1]["state"] == "succeeded"):
            print(f"job: {r}\nnodes: {servers.call('GET', '/v1/nodes')}", flush=True)
        keys_before = etcd.range_prefix("/gpupool/")
        servers.procs[old].send_signal(signal.SIGCONT)
        try:
            code = servers.procs[old].wait(timeout=10)
        except subprocess.TimeoutExpired:
            code = None
        c.check(code == 75, f"the old leader stopped when it found another leads (exit {code})")
        past.settimeout(5)
        try:
            answer = past.recv(65536)
        except OSError:
            answer = b""
        c.check(b" 201 " not in answer[:20], f"the old leader acknowledged nothing ({answer[:60]!r})")
        keys_after = etcd.range_prefix("/gpupool/")
        landed = [k for k, v in keys_after.items() if "from-the-past" in v]
        c.check(not landed, f"nothing the old leader wrote is in etcd ({landed[:3]})")
        changed = [k for k in keys_after if keys_after[k] != keys_before.get(k) and "/leader" not in k]
        c.check(not any(j["name"] == "from-the-past" for j in servers.all_jobs().values()), "the new leader has no job of the old one")
        acted = sum(open(f"{base}/{a}.log").read().count("not acted on") for a in ("a1", "a2"))
        print(f"keys changed in etcd while the old leader ran again: {len(changed)} (the new leader's own work); "
              f"agent replies refused as stale: {acted}", flush=True)
        log = open(f"{base}/server{old}.log").read()
        c.check("no longer the leader" in log, "the old leader says why it stopped")
        servers.start(old)

        # --- 3. kill -9 of etcd's leader under load ---
        servers.wait_serving()
        acked.clear()
        ack_times.clear()
        threads = load(40, "e", 100)
        victim = etcd.leader()
        t_kill = time.time()
        etcd.procs[victim].kill()
        etcd.procs[victim].wait()
        for t in threads:
            t.join()
        after = sorted(t for t in ack_times if t >= t_kill)
        before = max(t for t in ack_times if t < t_kill)
        resumed = (after[0] - t_kill) if after else None
        gaps = [b - a for a, b in zip([before] + after, after)]
        print(f"etcd leader killed: first acknowledgement {resumed:.2f} s later, longest gap {max(gaps):.2f} s", flush=True)
        c.check(len(acked) == 320, f"every submission acknowledged through the etcd kill ({len(acked)})")
        c.check(max(gaps) < 3.0, f"acknowledgements resumed within 3 s ({max(gaps):.2f} s)")
        ids = set(servers.all_jobs())
        c.check(all(i in ids for i in acked), "nothing acknowledged was lost")
        r = cli("submit", "--name", "cli-after-etcd-kill", "--", "true")
        c.check(r.returncode == 0, f"the CLI submits after etcd's leader died: {r.stderr[-300:]}")
        etcd.start(victim, "existing")

        # --- 4. the agents went through it all without a restart ---
        c.check(all(a.poll() is None for a in agents), "both agents are still the processes started at first")
        r = servers.call("GET", "/v1/node-groups")
        c.check(r and r[0] == 200 and sum(g["states"]["ready"] for g in r[1]["groups"]) == 2, "both nodes are ready")
    finally:
        for a in agents:
            try:
                os.killpg(a.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for a in agents:
            try:
                a.wait(timeout=10)
            except subprocess.TimeoutExpired:
                a.kill()
        servers.stop()
        etcd.stop()
    if c.failed == 0:
        shutil.rmtree(base, ignore_errors=True)  # kept when something failed: the logs are in it
    else:
        print(f"logs: {base}")
    return c.done()


if __name__ == "__main__":
    sys.exit(main())
