"""Live-pool benchmark: a real server and one local agent (simulated GPUs) on loopback.
  accept:     jobs/s accepted by POST /v1/jobs (4 keep-alive connections from Python; no agent, so
              they queue), and the same over 8 keep-alive connections from ApacheBench (`ab`, a C
              client that does not compete with the server for the GIL), 20,000 submissions
  throughput: trivial jobs/s run to completion end to end through one agent
  latency:    submit-to-running, p50 and p99: from just before the submit is sent to the moment
              the job's process runs (the job is `date +%s%N`, which prints that moment)
Usage: python3 bench/pool_bench.py build/gpupool [jobs]. Figures go in docs/benchmarks.md.
BENCH_ETCD=3: the server stores in etcd (--store etcd://), on 3 members the benchmark starts."""
import http.client
import json
import os
import statistics
import sys
import threading
import time

EXTRA = tuple(os.environ.get("BENCH_SERVER_ARGS", "").split())  # more `gpupool server` flags

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "e2e"))
from pool import Etcd, Pool  # noqa: E402

ETCD = None  # with BENCH_ETCD: the members started
_STARTED = [0]


def store_args():
    """--store etcd://... with a prefix of its own for each server started (a fresh pool)."""
    if ETCD is None:
        return ()
    _STARTED[0] += 1
    return ("--store", "etcd://" + ETCD.endpoints(), "--store-prefix", f"/bench{_STARTED[0]}")


def submit_loop(port, token, n, out):
    conn = http.client.HTTPConnection("127.0.0.1", port)
    body = json.dumps({"command": ["true"], "gpus": 0})
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    ids = []
    for _ in range(n):
        conn.request("POST", "/v1/jobs", body, headers)
        r = conn.getresponse()
        data = r.read()
        assert r.status == 201, data
        ids.append(json.loads(data)["id"])
    out.extend(ids)


def accept_rate(gpupool, n):
    pool = Pool(gpupool).start_server(*store_args(), *EXTRA)
    try:
        ids, threads = [], []
        t0 = time.perf_counter()
        for _ in range(4):
            th = threading.Thread(target=submit_loop, args=(pool.port, pool.token, n // 4, ids))
            th.start()
            threads.append(th)
        for th in threads:
            th.join()
        return len(ids) / (time.perf_counter() - t0)
    finally:
        pool.stop()


def accept_rate_ab(gpupool, n=20000, conns=8):
    """Submissions/s over `conns` keep-alive connections, measured by ab."""
    import re
    import shutil
    import subprocess
    if not shutil.which("ab"):
        return None
    pool = Pool(gpupool).start_server(*store_args(), *EXTRA)
    try:
        body = os.path.join(pool.dir, "body.json")
        with open(body, "w") as f:
            f.write(json.dumps({"command": ["true"], "gpus": 0}))
        out = subprocess.run(["ab", "-q", "-k", "-c", str(conns), "-n", str(n), "-p", body, "-T", "application/json",
                              "-H", f"Authorization: Bearer {pool.token}", f"http://127.0.0.1:{pool.port}/v1/jobs"],
                             capture_output=True, text=True, timeout=300).stdout
        if "Non-2xx" in out:
            raise RuntimeError(out)
        return float(re.search(r"Requests per second:\s+([\d.]+)", out).group(1))
    finally:
        pool.stop()


def end_to_end(gpupool, n):
    pool = Pool(gpupool).start_server(*store_args(), *EXTRA)
    pool.start_agent("bench", "8xH100")
    try:
        pool.wait_nodes(1)
        ids = []
        t0 = time.perf_counter()
        submit_loop(pool.port, pool.token, n, ids)
        # Done when nothing is queued, starting or running: three small queries rather than
        # listing every job, which would load the very server being measured.
        while any(pool.call("GET", f"/v1/jobs?state={s}&limit=1")[1]["jobs"] for s in ("queued", "starting", "running")):
            time.sleep(0.01)
        rate = n / (time.perf_counter() - t0)
        done = pool.all_jobs("&state=succeeded")
        assert len(done) == n, f"{len(done)} of {n} succeeded"
        latencies = []
        conn = http.client.HTTPConnection("127.0.0.1", pool.port)
        headers = {"Authorization": f"Bearer {pool.token}", "Content-Type": "application/json"}
        for _ in range(200):
            sent = time.time_ns()
            conn.request("POST", "/v1/jobs", json.dumps({"command": ["date", "+%s%N"], "gpus": 1}), headers)
            r = conn.getresponse()
            jid = json.loads(r.read())["id"]
            while True:
                conn.request("GET", f"/v1/jobs/{jid}/logs?task=0&stream=stdout", headers=headers)
                r = conn.getresponse()
                text = r.read().decode().strip()
                if text:
                    break
                time.sleep(0.002)
            latencies.append((int(text) - sent) / 1e6)
        latencies.sort()
        return rate, statistics.median(latencies), latencies[int(len(latencies) * 0.99) - 1]
    finally:
        pool.stop()


def main():
    global ETCD
    gpupool = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    if int(os.environ.get("BENCH_ETCD", "0")) > 0:
        import tempfile
        ETCD = Etcd(tempfile.mkdtemp(prefix="gpupool-bench-etcd-"), int(os.environ["BENCH_ETCD"]))
        print(f"store: etcd, {len(ETCD.client)} members on loopback")
    try:
        run(gpupool, n)
    finally:
        if ETCD:
            ETCD.stop()


def run(gpupool, n):
    accepted = accept_rate(gpupool, n)
    accepted_ab = accept_rate_ab(gpupool)
    rate, p50, p99 = end_to_end(gpupool, n)
    print(f"accepted:        {accepted:8.0f} jobs/s  ({n} submits, 4 connections)")
    if accepted_ab is not None:
        print(f"accepted (ab):   {accepted_ab:8.0f} jobs/s  (20000 submits, 8 keep-alive connections)")
    print(f"run to completion: {rate:6.0f} jobs/s  ({n} trivial jobs, one agent, 8 simulated GPUs)")
    print(f"submit-to-running: p50 {p50:.2f} ms, p99 {p99:.2f} ms  (200 jobs, one at a time)")


if __name__ == "__main__":
    main()
