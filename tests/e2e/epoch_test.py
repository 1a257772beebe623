"""An agent acts on nothing from a server that no longer leads: a real `gpupool agent` against a
stand-in server (Python's http.server speaking the agent protocol) whose replies carry the
leader's epoch. After a reply of epoch 5, a reply of epoch 4 that says "start this task" is
not acted on; the same start in a reply of a current epoch runs."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(__file__))
from pool import Checks  # noqa: E402


class Fake:
    def __init__(self, mark):
        self.epoch_next = 5       # the epoch the next heartbeat reply carries
        self.offer_start = False  # whether replies ask to start the task
        self.beats = []           # (epoch replied, bodies received)
        self.mark = mark

    def reply(self):
        start = [{"job": 7, "task": 0, "attempt": 1, "command": ["sh", "-c", f"touch {self.mark}"], "env": {},
                  "workdir": "", "gpu_mask": 0, "cpu": 0, "memory": 0}] if self.offer_start else []
        return {"start": start, "cancel": [], "epoch": self.epoch_next}


def handler(fake):
    class H(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.path == "/v1/agent/register":
                out = {"node": "e1", "lease_ms": 5000, "interval_ms": 200, "credential": "c" * 64, "epoch": 5}
            elif self.path == "/v1/agent/heartbeat":
                out = fake.reply()
                fake.beats.append((out["epoch"], json.loads(body)))
            else:
                self.send_response(404)
                self.end_headers()
                return
            data = json.dumps(out).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
    return H


def main():
    gpupool = os.path.abspath(sys.argv[1])
    base = tempfile.mkdtemp(prefix="gpupool-epoch-")
    os.chmod(base, 0o711)
    marks = f"{base}/marks"
    os.makedirs(marks)
    os.chmod(marks, 0o777)
    mark = f"{marks}/started"
    fake = Fake(mark)
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler(fake))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    with open(f"{base}/join.token", "w") as f:
        f.write("j" * 64 + "\n")
    os.chmod(f"{base}/join.token", 0o600)
    c = Checks()
    log = open(f"{base}/agent.log", "w")
    agent = subprocess.Popen([gpupool, "agent", "--server", f"127.0.0.1:{srv.server_address[1]}", "--join-token-file",
                              f"{base}/join.token", "--simulate-gpus", "1xV100", "--name", "e1", "--work-dir",
                              f"{base}/work", "--interval", "100ms", "--metrics-listen", "off"],
                             stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
    try:
        deadline = time.time() + 10
        while len(fake.beats) < 3 and time.time() < deadline:
            time.sleep(0.05)
        c.check(len(fake.beats) >= 3, "the agent heartbeats to epoch 5")
        # A deposed leader (epoch 4) asks it to start a task.
        fake.epoch_next, fake.offer_start = 4, True
        time.sleep(2)
        c.check(not os.path.exists(mark), "a start in a reply of an older epoch is not acted on")
        stale = [b for e, b in fake.beats if e == 4]
        c.check(len(stale) >= 2, f"the agent went on asking ({len(stale)} heartbeats answered by epoch 4)")
        c.check("not acted on" in open(f"{base}/agent.log").read(), "the agent says why")
        # The leader (epoch 5, or newer) asks the same: it runs.
        fake.epoch_next = 6
        deadline = time.time() + 10
        while not os.path.exists(mark) and time.time() < deadline:
            time.sleep(0.05)
        c.check(os.path.exists(mark), "the same start from the current epoch runs")
    finally:
        try:
            os.killpg(agent.pid, 15)
        except ProcessLookupError:
            pass
        agent.wait(timeout=10)
        srv.shutdown()
    if c.failed == 0:
        shutil.rmtree(base, ignore_errors=True)
    return c.done()


if __name__ == "__main__":
    sys.exit(main())
