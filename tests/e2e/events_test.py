"""The event outbox through the HTTP stream. A consumer follows GET /v1/events?since=N&wait=
while 300 jobs are submitted and run, and the server is killed with SIGKILL twice at seeded
random points. The consumer resumes from the last number it saw, retrying while the server is
away. It must see every sequence number exactly once, in order, with no gap. Every
acknowledged job must appear as submitted exactly once and as succeeded exactly once. Events
are written in the same transaction as the state change, so a crash can neither drop an event
of a change that survived nor keep one of a change that did not. Also checked: `gpupool
events` prints the log, and a bad `since` is refused."""
import json
import random
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

from pool import Checks, Pool

JOBS = 300


def main(gpupool):
    c = Checks()
    rng = random.Random(11)
    pool = Pool(gpupool)
    try:
        pool.start_server()
        pool.start_agent("one", "4xH100")
        pool.start_agent("two", "4xH100")
        pool.wait_nodes(2)
        seen = []  # (sequence, type, subject) in the order received
        stop = threading.Event()
        reconnects = [0]

        def consumer():
            since = 0
            while not stop.is_set():
                try:
                    req = urllib.request.Request(f"http://127.0.0.1:{pool.port}/v1/events?since={since}&wait=2s")
                    req.add_header("Authorization", f"Bearer {pool.token}")
                    with urllib.request.urlopen(req, timeout=10) as r:
                        body = r.read().decode()
                except (urllib.error.URLError, ConnectionError, OSError):
                    reconnects[0] += 1
                    time.sleep(0.05)
                    continue
                for line in body.splitlines():
                    e = json.loads(line)
                    seen.append((e["sequence"], e["type"], e["subject"]))
                    since = e["sequence"]

        t = threading.Thread(target=consumer)
        t.start()
        acked = []
        kill_points = sorted(rng.sample(range(30, JOBS - 30), 2))
        for i in range(JOBS):
            acked.append(pool.submit_retrying({"command": ["true"], "gpus": i % 2, "name": f"e-{i}"}))
            if kill_points and len(acked) == kill_points[0]:
                kill_points.pop(0)
                time.sleep(rng.uniform(0, 0.2))  # in the middle of placements and exits
                pool.kill_server()
                print(f"killed the server after {len(acked)} acknowledged submits", flush=True)
                time.sleep(rng.uniform(0.1, 0.4))
                pool.start_server()
        final = pool.wait_jobs(acked, timeout=90)
        c.check(all(j["state"] == "succeeded" for j in final.values()),
                f"every acknowledged job succeeded ({sum(j['state'] == 'succeeded' for j in final.values())}/{len(acked)})")
        # Let the consumer catch up with the last events.
        last = 0
        deadline = time.time() + 10
        while time.time() < deadline:
            last_seq = pool.all_events()[-1]["sequence"]
            if seen and seen[-1][0] == last_seq:
                last = last_seq
                break
            time.sleep(0.2)
        stop.set()
        t.join(timeout=15)
        seqs = [s for s, _, _ in seen]
        c.check(seqs == list(range(1, len(seqs) + 1)), f"every sequence number once, in order, no gap "
                f"({len(seqs)} events; first problem at {next((i for i, s in enumerate(seqs) if s != i + 1), None)})")
        c.check(last and seqs and seqs[-1] == last, f"the consumer reached the last event ({seqs[-1] if seqs else None} of {last})")
        submitted = [subj for _, typ, subj in seen if typ == "io.gpupool.job.submitted"]
        succeeded = [subj for _, typ, subj in seen if typ == "io.gpupool.job.succeeded"]
        want = sorted(f"job/{i}" for i in acked)
        c.check(sorted(set(submitted) & set(want)) == want and len(submitted) == len(set(submitted)),
                f"each acknowledged job submitted exactly once ({len(submitted)} submitted events, {len(want)} acknowledged)")
        c.check(sorted(succeeded) == want, f"each job succeeded exactly once ({len(succeeded)} events for {len(want)} jobs)")
        types = sorted({typ for _, typ, _ in seen})
        for typ in ("io.gpupool.node.joined", "io.gpupool.job.placed", "io.gpupool.job.started"):
            c.check(typ in types, f"{typ} among the events ({types})")
        print(f"{len(seqs)} events, {reconnects[0]} consumer reconnects across 2 server kills; types: {', '.join(types)}", flush=True)
        # The CLI reads the same log.
        env = {"GPUPOOL_ADDR": f"127.0.0.1:{pool.port}", "GPUPOOL_TOKEN": pool.token, "PATH": "/usr/bin:/bin"}
        out = subprocess.run([gpupool, "events", "--since", str(last - 3)], capture_output=True, text=True, env=env, timeout=30)
        lines = out.stdout.strip().splitlines()
        c.check(out.returncode == 0 and len(lines) == 3 and lines[-1].split()[0] == str(last),
                f"`gpupool events --since {last - 3}` prints the last 3 events ({out.returncode}: {lines[-1:] if lines else out.stderr})")
        status, body = pool.call("GET", "/v1/events?since=minus-one")
        c.check(status == 400 and "since" in body.get("error", ""), f"a bad since is refused ({status} {body})")
        # Retention: a server that keeps 50 events prunes the rest; a reader behind that is told.
        pool.stop_server()
        pool.start_server("--events-retain", "50")
        time.sleep(0.5)  # a tick or two
        status, body = pool.call("GET", "/v1/events?since=5")
        c.check(status == 410 and "pruned" in body.get("error", ""), f"a reader behind retention gets 410 ({status} {body})")
        kept = [e["sequence"] for e in pool.all_events()]
        c.check(len(kept) == 50 and kept[-1] == last, f"since=0 reads the 50 kept, up to {last} ({len(kept)}, {kept[-1:]})")
        out = subprocess.run([gpupool, "events", "--since", "5"], capture_output=True, text=True, env=env, timeout=30)
        c.check(out.returncode != 0 and "pruned" in out.stderr, f"`gpupool events --since 5` says why ({out.returncode}: {out.stderr})")
    finally:
        pool.stop()
    return c.done()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
