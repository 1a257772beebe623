"""A chatty job: 10 MB/s of arbitrary bytes (binary, control characters, long lines, no
newlines) for 30 s, next to other jobs. It runs to its end; no node is declared down; its log is
served, with every byte either stored or counted as dropped (and marked where it was dropped);
the other jobs are untouched."""
import os
import re
import sys
import time

from pool import Checks, Pool

SECONDS = 30
RATE = 10_000_000

FLOOD = f"""
import os, sys, time
out, err = sys.stdout.buffer, sys.stderr.buffer
# Every byte value, with no newline in sight (a 100 kB "line"), then random bytes.
pattern = bytes(b for b in range(256) if b != 10) * 400
written, t0 = 0, time.time()
while time.time() - t0 < {SECONDS}:
    due = int((time.time() - t0) * {RATE})
    while written < due:
        block = pattern if (written // len(pattern)) % 2 == 0 else os.urandom(len(pattern))
        out.write(block)
        written += len(block)
    out.flush()
    err.write(b"\\x1b[2J\\x00\\x07" * 100)
    time.sleep(0.005)
print(written, file=sys.stderr)
"""


def main(gpupool):
    c = Checks()
    pool = Pool(gpupool)
    try:
        pool.start_server()
        pool.start_agent("alpha", "2xH100")
        pool.start_agent("beta", "2xH100")
        pool.wait_nodes(2)
        flood = pool.submit(["python3", "-c", FLOOD], gpus=1, name="flood")
        calm = [pool.submit(["sh", "-c", f"sleep {SECONDS + 3}; echo calm-{i}"], gpus=1, name=f"calm-{i}") for i in range(3)]
        states_seen = set()
        deadline = time.time() + SECONDS + 60
        while time.time() < deadline:
            status, body = pool.call("GET", "/v1/nodes")
            states_seen |= {n["state"] for n in body["nodes"]}
            status, j = pool.call("GET", f"/v1/jobs/{flood}")
            if j["state"] in ("succeeded", "failed", "cancelled") and all(
                    pool.call("GET", f"/v1/jobs/{x}")[1]["state"] in ("succeeded", "failed") for x in calm):
                break
            time.sleep(0.5)
        jobs = pool.wait_jobs([flood, *calm], timeout=10)
        c.check("down" not in states_seen, f"no node was declared down (states seen: {sorted(states_seen)})")
        events = pool.all_events()
        downs = [e for e in events if e["type"] == "io.gpupool.node.down"]
        c.check(not downs, f"no node.down event ({len(downs)})")
        f = jobs[flood]
        c.check(f["state"] == "succeeded" and f["attempt"] == 1, f"the flood job ran once to its end ({f['state']}, attempt {f['attempt']}, {f['message']})")
        for x in calm:
            j = jobs[x]
            c.check(j["state"] == "succeeded" and j["attempt"] == 1, f"calm job {x} untouched ({j['state']}, attempt {j['attempt']})")
            status, text = pool.call("GET", f"/v1/jobs/{x}/logs?task=0&stream=stdout")
            c.check(status == 200 and text.strip().startswith("calm-"), f"calm job {x}'s log: {text!r}")
        # Its stderr ends with how many bytes it wrote; stdout holds them, or says where some were dropped.
        status, err_text = pool.call("GET", f"/v1/jobs/{flood}/logs?task=0&stream=stderr&offset=0&limit=16777216")
        m = re.search(r"(\d+)\s*$", err_text if isinstance(err_text, str) else "")
        written = int(m.group(1)) if m else -1
        c.check(written >= SECONDS * RATE * 0.9, f"the job wrote {written} bytes")
        path = f"{pool.dir}/server/logs/{flood}/task-0.stdout"
        data = open(path, "rb").read() if os.path.exists(path) else b""
        markers = list(re.finditer(rb"\n\[gpupool: (\d+) bytes of output dropped here: [^\]]*\]\n", data))
        dropped = sum(int(x.group(1)) for x in markers)
        kept = len(data) - sum(len(x.group(0)) for x in markers)
        print(f"flood: wrote {written} bytes in {SECONDS} s; stored {kept}, dropped {dropped} in {len(markers)} place(s)")
        c.check(kept + dropped == written, f"every byte stored ({kept}) or counted as dropped ({dropped}): {kept + dropped} of {written}")
        c.check(kept >= 10_000_000, f"at least 10 MB of it stored ({kept})")
        status, tail = pool.call("GET", f"/v1/jobs/{flood}/logs?task=0&stream=stdout&offset={max(0, len(data) - 4096)}")
        c.check(status == 200 and len(tail) > 0, f"its log is served (the last 4 KiB: {len(tail)} bytes)")
        status, metrics = pool.call("GET", "/metrics", token=None)
        m = re.search(r"^gpupool_log_bytes_dropped_total (\S+)", metrics, re.M)
        c.check(m is not None and int(float(m.group(1))) == dropped, f"/metrics counts the dropped bytes ({m and m.group(1)}, want {dropped})")
    finally:
        pool.stop()
    return c.done()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
