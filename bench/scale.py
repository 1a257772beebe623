#!/usr/bin/env python3
"""The live pool at fleet scale, on this machine: a real `gpupool server` and one `gpupool
hollow` process with N hollow nodes (real agent protocol over real sockets, no processes behind
the tasks). It measures, in one run:

  1. the storm: J one-GPU jobs submitted as arrays, each task running D seconds on a hollow
     node; how long from the submissions to every job started (queued -> started rate), the
     p50/p99 latency of `GET /v1/jobs?limit=100` while it happens, and the server's resident
     memory above its empty size (per job and per node);
  2. heartbeats: the server's CPU while N nodes heartbeat (idle and busy), and how long after
     one node's heartbeats stop its jobs run elsewhere;
  3. restart: `kill -9` of the server with everything in its store; how long until it serves
     again, whether every job is there and every running element was adopted, and whether any
     task attempt was started twice (the hollow agents' own record).
  4. single-job submissions per second over 8 keep-alive connections (ab), and the time to
     accept one array of J elements.

Prints one JSON object (also written to --out). Standard library only, plus ab
(apache2-utils) for item 4. Used by `make bench-scale` (10,000 nodes, 100,000 jobs) and, at
1,000 nodes, by tests/e2e/scale_test.py."""
import argparse
import http.client
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


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


PROBE = '''
import http.client, sys, time
port, token = int(sys.argv[1]), sys.argv[2]
c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
while True:
    t = time.perf_counter()
    c.request("GET", "/v1/jobs?limit=100", headers={"Authorization": "Bearer " + token})
    r = c.getresponse()
    r.read()
    if r.status == 200:
        print(time.time(), time.perf_counter() - t, flush=True)
    time.sleep(0.05)
'''


class Api:
    def __init__(self, port, token):
        self.port, self.token = port, token
        self.conn = None

    def call(self, method, path, body=None, timeout=30):
        for attempt in range(2):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
                headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
                self.conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
                r = self.conn.getresponse()
                text = r.read().decode()
                try:
                    return r.status, json.loads(text)
                except ValueError:
                    return r.status, text
            except (http.client.HTTPException, OSError):
                self.conn = None
                if attempt == 1:
                    raise
        return None, None


class Scale:
    def __init__(self, gpupool, nodes, jobs, arrays, duration, workdir=None, gpus="8xH100", server_args=()):
        self.gpupool = os.path.abspath(gpupool)
        self.server_args = list(server_args)
        self.nodes, self.jobs, self.arrays, self.duration, self.gpus = nodes, jobs, arrays, duration, gpus
        self.dir = workdir or tempfile.mkdtemp(prefix="gpupool-scale-")
        self.port = free_port()
        self.control = free_port()
        self.server = None
        self.hollow = None
        self.out = {"nodes": nodes, "jobs": jobs, "arrays": arrays, "task_seconds": duration, "gpus_per_node": gpus}

    # --- processes ---
    def start_server(self):
        self.server = subprocess.Popen(
            [self.gpupool, "server", "--listen", f"127.0.0.1:{self.port}", "--data-dir", f"{self.dir}/server",
             "--policy", "fifo", "--events-retain", "0", *self.server_args],
            stdout=subprocess.PIPE, stderr=open(f"{self.dir}/server.log", "a"), text=True)
        line = self.server.stdout.readline()
        if "listening" not in line:
            raise RuntimeError(f"server did not start: {line}")
        threading.Thread(target=self.server.stdout.read, daemon=True).start()
        self.token = open(f"{self.dir}/server/admin.token").read().strip()
        self.api = Api(self.port, self.token)

    def wait_serving(self, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                status, _ = Api(self.port, self.token).call("GET", "/v1/health", timeout=2)
                if status == 200:
                    return True
            except OSError:
                pass
            time.sleep(0.02)
        return False

    def start_hollow(self):
        # The hollow nodes stand for machines elsewhere: on this machine they run at a lower
        # priority than the server under test and the client that measures it.
        self.hollow = subprocess.Popen(
            ["nice", "-n", "10", self.gpupool, "hollow", "--server", f"127.0.0.1:{self.port}", "--join-token-file", f"{self.dir}/server/join.token",
             "--nodes", str(self.nodes), "--gpus", self.gpus, "--duration", f"{self.duration}s", "--sites", str(max(1, self.nodes // 1000)),
             "--control", f"127.0.0.1:{self.control}", "--record", f"{self.dir}/started.txt"],
            stdout=subprocess.DEVNULL, stderr=open(f"{self.dir}/hollow.log", "a"))

    def metric(self, name):
        """A counter or gauge of the server's /metrics (0 when absent)."""
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        c.request("GET", "/metrics")
        for line in c.getresponse().read().decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def hollow_counts(self):
        c = http.client.HTTPConnection("127.0.0.1", self.control, timeout=10)
        c.request("GET", "/v1/hollow")
        return json.loads(c.getresponse().read())

    def hollow_post(self, path):
        c = http.client.HTTPConnection("127.0.0.1", self.control, timeout=10)
        c.request("POST", path)
        return json.loads(c.getresponse().read())

    def wait_registered(self, timeout=300):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if self.hollow_counts()["registered"] >= self.nodes:
                    return time.time()
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError("the hollow nodes did not all register")

    def stop(self):
        for p in (self.hollow, self.server):
            if p and p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()

    # --- measurements ---
    def cpu_over(self, seconds):
        a = cpu_seconds(self.server.pid)
        time.sleep(seconds)
        return (cpu_seconds(self.server.pid) - a) / seconds

    def storm(self):
        """Arrays of one-GPU jobs; the rate from the first submission to every job started."""
        per = self.jobs // self.arrays
        lat, slow, stop = [], [], threading.Event()

        # The listing is timed by a process of its own (no lock shared with this one's threads),
        # as a user's `gpupool jobs` would be, 20 times a second.
        probe = subprocess.Popen([sys.executable, "-c", PROBE, str(self.port), self.token], stdout=subprocess.PIPE, text=True)
        t0 = time.time()  # (set again when the storm begins; the reader below uses the latest)

        def poll():
            for line in probe.stdout:
                at, secs = map(float, line.split())
                lat.append(secs)
                if secs > 0.03:
                    slow.append((round(at - t0, 2), round(secs * 1000, 1)))

        poller = threading.Thread(target=poll, daemon=True)
        peak_rss = [0]

        def watch_rss():
            while not stop.is_set():
                peak_rss[0] = max(peak_rss[0], rss_kib(self.server.pid))
                time.sleep(0.1)

        watcher = threading.Thread(target=watch_rss, daemon=True)
        # Warmed up (connected, a few answers) before the storm begins.
        for _ in range(3):
            probe.stdout.readline()
        started0 = self.hollow_counts()["started"]
        t0 = time.time()
        poller.start()
        watcher.start()
        # The arrays arrive together, each on a connection of its own, as many users' would.
        ids = [None] * self.arrays

        def submit(a):
            status, body = Api(self.port, self.token).call("POST", "/v1/jobs", {
                "command": ["train"], "gpus": 1, "array": f"0-{per - 1}", "name": f"storm-{a}", "duration": f"{self.duration}s"})
            if status != 201:
                raise RuntimeError(f"submit: {status} {body}")
            ids[a] = body["id"]

        threads = [threading.Thread(target=submit, args=(a,)) for a in range(self.arrays)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        t_submitted = time.time()
        capacity = self.nodes * int(self.gpus.split("x")[0])
        first_wave = min(self.jobs, capacity)
        t_first_wave = None
        deadline = time.time() + 600 + 2 * self.duration
        while time.time() < deadline:
            n = self.hollow_counts()["started"] - started0
            if t_first_wave is None and n >= first_wave:
                t_first_wave = time.time()
            if n >= self.jobs:
                break
            time.sleep(0.05)
        t_all = time.time()
        stop.set()
        probe.terminate()
        poller.join()
        watcher.join()
        lat.sort()
        started = self.hollow_counts()["started"] - started0
        q = lambda p: round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 2) if lat else None
        self.out["storm"] = {
            "arrays": ids, "submit_seconds": round(t_submitted - t0, 3), "started": started,
            "first_wave_jobs": first_wave,
            "first_wave_seconds": round(t_first_wave - t0, 3) if t_first_wave else None,
            "queued_to_started_per_s": round(first_wave / (t_first_wave - t0)) if t_first_wave else None,
            "all_started_seconds": round(t_all - t0, 3),
            "list_limit100_ms": {"p50": q(0.5), "p99": q(0.99), "max": q(1.0), "samples": len(lat), "slowest": sorted(slow, key=lambda x: -x[1])[:20]},
            "server_rss_peak_kib": peak_rss[0],
        }
        return started >= self.jobs

    def move_one_node(self):
        """Stop one busy node's heartbeats; how long until its jobs run elsewhere."""
        # The newest running element's node, and its jobs that have a while to run yet (a job
        # that ends by itself meanwhile would say nothing about the move).
        status, body = self.api.call("GET", "/v1/jobs?state=running&expand=1&limit=1")
        node = body["jobs"][0]["node"]
        status, body = self.api.call("GET", f"/v1/jobs?state=running&expand=1&node={node}&limit=1000")
        now_ms = time.time() * 1000
        victims = [j["id"] for j in body["jobs"] if j["start_ms"] > now_ms - (self.duration - 15) * 1000]
        t0 = time.time()
        self.hollow_post(f"/v1/hollow/nodes/{node}/stop")
        moved_at, off_at, down_at = None, None, None
        while time.time() - t0 < 30:
            if down_at is None:
                s_, n_ = self.api.call("GET", f"/v1/nodes/{node}")
                if s_ == 200 and n_["state"] == "down":
                    down_at = time.time()
            status, body = self.api.call("GET", f"/v1/jobs?state=running&expand=1&node={node}&limit=1000")
            if off_at is None and not body["jobs"]:
                off_at = time.time()
            elsewhere = 0
            for v in victims:
                s, j = self.api.call("GET", f"/v1/jobs/{v}")
                elsewhere += s == 200 and j["state"] in ("starting", "running") and j["node"] not in (None, node)
            if elsewhere == len(victims):
                moved_at = time.time()
                break
            time.sleep(0.05)
        self.hollow_post(f"/v1/hollow/nodes/{node}/resume")
        self.out["move"] = {"node": node, "jobs": len(victims), "heartbeat_interval_ms": self.interval_ms(),
                            "down_seconds": round(down_at - t0, 3) if down_at else None,
                            "off_node_seconds": round(off_at - t0, 3) if off_at else None,
                            "running_elsewhere_seconds": round(moved_at - t0, 3) if moved_at else None}
        return moved_at is not None

    def interval_ms(self):
        """The idle heartbeat interval the server asks for at this fleet size."""
        status, metrics = self.api.call("GET", "/metrics")
        for line in (metrics if isinstance(metrics, str) else "").splitlines():
            if line.startswith("gpupool_heartbeat_interval_seconds "):
                return round(float(line.split()[1]) * 1000)
        return None

    def counts(self):
        out = {"present": 0, "running": 0}
        for a in self.out["storm"]["arrays"]:
            status, j = self.api.call("GET", f"/v1/jobs/{a}")
            c = j["array_counts"]
            out["present"] += sum(c.values())
            out["running"] += c["running"] + c["starting"]
        return out

    def restart(self):
        """kill -9 with everything in the store: back to serving, every job there, none twice."""
        before = self.counts()
        running_before = self.hollow_counts()["running"]
        self.server.send_signal(signal.SIGKILL)
        self.server.wait()
        t0 = time.time()
        self.start_server()
        serving = self.wait_serving()
        t_serving = time.time()
        after = self.counts()
        # Adoption: the hollow nodes report their running tasks; every one is running again.
        deadline = time.time() + 60
        adopted = None
        while time.time() < deadline:
            c = self.counts()
            if c["running"] >= running_before:
                adopted = time.time()
                after = c
                break
            time.sleep(0.1)
        hc = self.hollow_counts()
        self.out["restart"] = {"serving_seconds": round(t_serving - t0, 3) if serving else None,
                               "jobs_before": before["present"], "jobs_after": after["present"],
                               "running_before": running_before, "running_after": after["running"],
                               "adopted_seconds": round(adopted - t0, 3) if adopted else None,
                               "hollow_repeats": hc["repeats"]}
        return serving and after["present"] == before["present"]

    def started_twice(self):
        """From the hollow agents' own record: (job, task, attempt) started more than once, and
        jobs started at more than one attempt with no failure to explain it."""
        self.hollow_counts()  # flushes the record
        seen, attempts = {}, {}
        with open(f"{self.dir}/started.txt") as f:
            for line in f:
                node, job, task, attempt, ms = line.split()
                k = (job, task, attempt)
                seen[k] = seen.get(k, 0) + 1
                attempts.setdefault((job, task), set()).add(attempt)
        twice = sum(1 for n in seen.values() if n > 1)
        moved = sum(1 for a in attempts.values() if len(a) > 1)
        self.out["started_twice"] = {"attempts_started_twice": twice, "tasks_with_more_than_one_attempt": moved,
                                     "records": sum(seen.values())}
        return twice

    def accept_rate(self, n=20000):
        if not shutil.which("ab"):
            self.out["accept"] = {"skipped": "ab (apache2-utils) is not installed"}
            return
        body = f"{self.dir}/job.json"
        with open(body, "w") as f:
            json.dump({"command": ["true"], "gpus": 1, "gpu_model": "A100"}, f)  # waits: no A100 here
        r = subprocess.run(["ab", "-q", "-k", "-c", "8", "-n", str(n), "-p", body, "-T", "application/json", "-H",
                            f"Authorization: Bearer {self.token}", f"http://127.0.0.1:{self.port}/v1/jobs"],
                           capture_output=True, text=True)
        rate = None
        for line in r.stdout.splitlines():
            if line.startswith("Requests per second:"):
                rate = float(line.split()[3])
        t0 = time.time()
        status, res = self.api.call("POST", "/v1/jobs", {"command": ["true"], "gpus": 1, "gpu_model": "A100",
                                                        "array": f"0-{self.jobs - 1}"})
        self.out["accept"] = {"single_jobs_per_s_8_keepalive": rate, "requests": n,
                              "array_elements": self.jobs, "array_accept_seconds": round(time.time() - t0, 3),
                              "array_status": status}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("gpupool")
    ap.add_argument("--nodes", type=int, default=10000)
    ap.add_argument("--jobs", type=int, default=100000)
    ap.add_argument("--arrays", type=int, default=10)
    ap.add_argument("--duration", type=float, default=60)
    ap.add_argument("--out", default="")
    ap.add_argument("--server-arg", action="append", default=[],
                    help="one more argument for `gpupool server` (repeatable), e.g. --server-arg=--max-queued-heartbeats=64")
    ap.add_argument("--keep", action="store_true", help="keep the run's directory (store, logs, the hollow record)")
    ap.add_argument("--storm-only", action="store_true",
                    help="stop after the storm (registration, memory, the queued-to-started rate, listing latency)")
    a = ap.parse_args()
    s = Scale(a.gpupool, a.nodes, a.jobs, a.arrays, a.duration, server_args=a.server_arg)
    try:
        s.start_server()
        time.sleep(0.5)
        s.out["server_rss_empty_kib"] = rss_kib(s.server.pid)
        t0 = time.time()
        s.start_hollow()
        s.wait_registered()
        s.out["register_seconds"] = round(time.time() - t0, 3)
        time.sleep(3)
        s.out["server_rss_nodes_kib"] = rss_kib(s.server.pid)
        s.out["server_cpu_idle_heartbeats"] = round(s.cpu_over(10), 3)
        s.storm()
        st = s.out["storm"]
        st["rss_above_empty_kib"] = st["server_rss_peak_kib"] - s.out["server_rss_empty_kib"]
        st["rss_budget_kib"] = s.jobs + 4 * s.nodes
        st["heartbeats_held"] = s.metric("gpupool_heartbeats_held_total")
        # Nodes declared down during the storm (none should be: every node is alive), and the
        # nodes that looked silent only because the server had not yet read their heartbeat.
        st["nodes_declared_down"] = s.metric("gpupool_failure_detection_seconds_count")
        st["heartbeats_unread_at_deadline"] = s.metric("gpupool_heartbeats_unread_at_deadline_total")
        st["server_stalls"] = s.metric("gpupool_server_stalls_total")
        if not a.storm_only:
            s.out["server_cpu_busy_heartbeats"] = round(s.cpu_over(10), 3)
            s.move_one_node()
            s.restart()
            s.started_twice()
            s.accept_rate()
    finally:
        s.stop()
        if a.keep:
            print(f"kept {s.dir}", file=sys.stderr)
        else:
            shutil.rmtree(s.dir, ignore_errors=True)
    text = json.dumps(s.out, indent=2)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
