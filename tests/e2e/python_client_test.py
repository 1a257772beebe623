"""The Python client (clients/python) against a live server over HTTPS: installed with pip
from the checkout (no registry), it submits with every kind of field, reads typed results,
streams a job's output as it is written, waits, cancels, explains, lists nodes, and follows the
event log across a server restart without missing or repeating an event. The example script
runs too."""
import os
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from pool import Checks, Pool  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def main():
    gpupool = os.path.abspath(sys.argv[1])
    c = Checks()
    site = tempfile.mkdtemp(prefix="gpupool-pyclient-")
    # Debian's pip, setuptools and wheel (scripts/bootstrap installs them) build it offline; the
    # package is pure Python, so this interpreter imports it from the target whichever built it.
    pip_python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    r = subprocess.run([pip_python, "-m", "pip", "install", "--quiet", "--no-build-isolation", "--no-index", "--target", site,
                        os.path.join(ROOT, "clients", "python")], capture_output=True, text=True)
    c.check(r.returncode == 0, f"pip installs clients/python with no registry: {r.stderr.strip()[-300:]}")
    sys.path.insert(0, site)
    from gpupool_client import Client, GpupoolError, Job  # noqa: E402
    c.check(os.path.exists(os.path.join(site, "gpupool_client", "__init__.py")), "... into the target, not from the checkout")
    pool = Pool(gpupool)
    try:
        pool.start_server()
        pool.start_agent("n1", "2xH100", server=f"https://127.0.0.1:{pool.port}")
        pool.wait_nodes(1)
        ca = f"{pool.dir}/server/tls/ca.crt"
        cl = Client(f"https://127.0.0.1:{pool.port}", token=pool.token, ca=ca)
        nodes = cl.nodes()
        c.check(len(nodes) == 1 and nodes[0].name == "n1" and nodes[0].gpus == 2 and nodes[0].model == "H100",
                f"nodes(): typed ({nodes})")

        # The event log, followed on a thread of its own from the start, across a restart.
        seen = []
        stop = threading.Event()

        def follow():
            f = Client(f"https://127.0.0.1:{pool.port}", token=pool.token, ca=ca, timeout=5)
            for e in f.events(since=0, wait="1s", retry=0.2):
                seen.append(e)
                if stop.is_set() and e.type == "job.succeeded" and e.data.get("name") == "after-restart":
                    return
        t = threading.Thread(target=follow, daemon=True)
        t.start()

        j = cl.submit(["sh", "-c", "for i in 1 2 3 4; do echo line $i; sleep 0.3; done; echo $GREETING; echo $TOKEN_X >&2"],
                      gpus=1, name="stream", env={"GREETING": "hello"}, secrets={"TOKEN_X": "s3cret-value"}, time="5m",
                      priority=5, max_retries=1)
        c.check(isinstance(j, Job) and j.name == "stream" and j.gpus_per_task == 1 and j.raw.get("secrets") == ["TOKEN_X"],
                f"submit() answers the job, typed, its secret named only ({j.raw.get('secrets')})")
        chunks = list(cl.logs(j.id, follow=True))
        text = "".join(chunks)
        c.check(text == "line 1\nline 2\nline 3\nline 4\nhello\n" and len(chunks) >= 2,
                f"logs(follow=True) streams the output as it comes, whole ({len(chunks)} chunks: {text!r})")
        c.check("s3cret-value" in "".join(cl.logs(j.id, stream="stderr")), "the secret reached the job's environment")
        done = cl.wait(j.id, timeout=30)
        c.check(done.state == "succeeded" and done.exit_code == 0 and done.node == "n1", f"wait(): {done.state} on {done.node}")

        big = cl.submit(["true"], gpus=2, name="big")
        blocker = cl.submit(["sleep", "30"], gpus=2, name="blocker", dependency=None)
        held = cl.submit(["true"], name="held", dependency=f"afterok:{blocker.id}")
        time.sleep(0.5)
        c.check("waiting for its dependencies" in cl.explain(held.id), "explain() says what a held job waits for")
        cl.cancel(blocker.id)
        c.check(cl.wait(held.id, timeout=30).state == "cancelled", "cancel() ends the job; its afterok dependent with it")
        cl.wait(big.id, timeout=30)
        listed = cl.jobs()
        c.check({x.name for x in listed} >= {"stream", "big", "blocker", "held"}, f"jobs() lists them ({len(listed)})")
        c.check(all(x.state == "cancelled" for x in cl.jobs(state="cancelled")) and len(cl.jobs(state="cancelled")) == 2,
                "jobs(state=...) filters")
        try:
            cl.submit(["true"], gpus=99)
            c.check(False, "a bad field is refused")
        except GpupoolError as e:
            c.check(e.status == 400 and "gpus" in e.message, f"a refusal raises GpupoolError with the status and message: {e}")
        try:
            cl.submit(["true"], gpu=1)
            c.check(False, "an unknown keyword is refused")
        except TypeError as e:
            c.check("gpu" in str(e), f"an unknown keyword is a TypeError naming it: {e}")

        # --- the restart, with the follower following ---
        before = len(seen)
        pool.stop_server()
        time.sleep(1.0)
        pool.start_server()
        stop.set()
        after = cl.submit(["true"], name="after-restart")
        cl.wait(after.id, timeout=30)
        t.join(timeout=30)
        c.check(not t.is_alive(), f"the follower saw the job after the restart ({len(seen)} events, {before} before it)")
        seqs = [e.sequence for e in seen]
        c.check(seqs == list(range(1, len(seqs) + 1)), f"every event once, in order, across the restart (1..{seqs[-1] if seqs else 0})")
        c.check(any(e.type == "job.submitted" and e.data.get("name") == "after-restart" for e in seen), "including those after it")

        env = dict(os.environ, PYTHONPATH=site, GPUPOOL_ADDR=f"https://127.0.0.1:{pool.port}", GPUPOOL_CA=ca,
                   GPUPOOL_TOKEN=pool.token)
        r = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "python_client.py")], capture_output=True, text=True,
                           env=env, timeout=120)
        c.check(r.returncode == 0 and "lr=0.1 step 3" in r.stdout and r.stdout.count("succeeded") >= 3,
                f"examples/python_client.py runs: {(r.stdout + r.stderr).strip()[-300:]}")
    finally:
        pool.stop()
    return c.done()


if __name__ == "__main__":
    sys.exit(main())
