"""`gpupool dev --autoscale`: a whole pool on this machine that starts with no agent. A job
arrives, the server buys a node from the dev fleet's offers (the local provisioner starts a real
agent with simulated GPUs), the job runs and succeeds, its GPU time is in the usage records, and
when dev is stopped (SIGTERM, as Ctrl-C) every node it bought goes with it."""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

from pool import Checks, free_port

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def call(port, token, method, path, body=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 data=json.dumps(body).encode() if body is not None else None)
    req.add_header("Authorization", f"Bearer {token}")
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read().decode())


def main(gpupool):
    c = Checks()
    base = tempfile.mkdtemp(prefix="gpupool-dev-as-")
    os.chmod(base, 0o711)  # the agents dev starts run tasks as nobody, who passes through
    data = os.path.join(base, "dev")
    port = free_port()
    dev = subprocess.Popen([os.path.abspath(gpupool), "dev", "--autoscale", "--data-dir", data, "--listen", f"127.0.0.1:{port}"],
                           cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        banner = ""
        while "Ctrl-C" not in banner:
            line = dev.stdout.readline()
            if not line:
                break
            banner += line
        c.check("with 0 agents" in banner and "autoscaling" in banner, f"dev starts with no agent and says it autoscales: {banner}")
        token = open(os.path.join(data, "admin.token")).read().strip()
        jid = call(port, token, "POST", "/v1/jobs", {"command": ["sh", "-c", "echo hi from $GPUPOOL_NODE"], "gpus": 2,
                                                       "tenant": "dev"})["id"]
        deadline = time.time() + 60
        job = {}
        while time.time() < deadline:
            job = call(port, token, "GET", f"/v1/jobs/{jid}")
            if job["state"] in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(0.3)
        c.check(job.get("state") == "succeeded", f"the job ran on a node bought for it: {job.get('state')} {job.get('message')}")
        usage = call(port, token, "GET", "/v1/usage?by=tenant,kind")
        c.check(any(r["tenant"] == "dev" and r["kind"] == "job" and r["gpu_hours"] > 0 for r in usage["rows"]),
                f"its GPU time is in the usage records: {usage['rows']}")
        instances = json.load(open(os.path.join(data, "provisioners", "lab", "instances.json")))["instances"]
        c.check(len(instances) >= 1, f"the local provisioner holds the node it started: {list(instances)}")
    finally:
        dev.send_signal(signal.SIGTERM)
        try:
            dev.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(dev.pid, signal.SIGKILL)
    try:
        instances = json.load(open(os.path.join(data, "provisioners", "lab", "instances.json")))["instances"]
    except (OSError, ValueError):
        instances = {"?": "unreadable"}
    c.check(dev.returncode == 0 and not instances, f"stopping dev deletes every node it bought: rc {dev.returncode}, {list(instances)}")
    left = subprocess.run(["pgrep", "-f", data], capture_output=True, text=True).stdout.split()
    c.check(not left, f"and no agent of it is left running: {left}")
    for pid in left:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    return c.done()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
