"""How long a job takes to start through each driver, against starting the same thing by hand.

Each run's first instruction is `: > started` (a shell builtin: no fork), so the file's
modification time (the host's wall clock) is the moment the task began. Timed from just before
the request (or the spawn) to that moment, the median (and 90th percentile) of N. File times come
from the kernel's coarse clock (it moves once a tick, 1 to 4 ms), so each figure is good to a
tick; the plain process start is below that, and is timed to its exit instead:

  by hand, process:  sh started with posix_spawn and waited for, as a user would (to its exit)
  by hand, runc:     `runc run` of a busybox-static root, with a bind mount, as a user would
  gpupool, process:  submit to a server on loopback, one agent, the job's process under its supervisor
  gpupool, oci:      the same job with --rootfs: the agent writes config.json and runs runc

Jobs are sent one at a time to an idle pool (the agent waits in its long poll). Needs root and
runc for the runc rows. Usage: python3 bench/driver_start.py build/gpupool [N]. The figures go in
docs/benchmarks.md."""
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "e2e"))
from pool import Pool  # noqa: E402

PROBE = ": > started; exit 0"


def summary(samples):
    s = sorted(samples)
    return {"median_ms": round(statistics.median(s), 2), "p90_ms": round(s[int(0.9 * (len(s) - 1))], 2),
            "min_ms": round(s[0], 2), "n": len(s)}


def started_after(path, t0):
    return (os.stat(path).st_mtime_ns - t0) / 1e6


def by_hand_process(n, work):
    out = []
    for i in range(n):
        d = f"{work}/p{i}"
        os.makedirs(d)
        t0 = time.time_ns()
        subprocess.run(["sh", "-c", PROBE], cwd=d, check=True)
        out.append((time.time_ns() - t0) / 1e6)
    return out


def make_rootfs(path):
    os.makedirs(f"{path}/bin")
    shutil.copy(shutil.which("busybox") or "/bin/busybox", f"{path}/bin/busybox")
    os.symlink("busybox", f"{path}/bin/sh")
    for d in ("proc", "dev", "sys", "tmp", "task"):
        os.makedirs(f"{path}/{d}", exist_ok=True)


def by_hand_runc(n, work, rootfs):
    out = []
    runc = shutil.which("runc")
    for i in range(n):
        bundle = f"{work}/b{i}"
        task = f"{work}/t{i}"
        os.makedirs(bundle)
        os.makedirs(task)
        subprocess.run([runc, "spec"], cwd=bundle, check=True)
        with open(f"{bundle}/config.json") as f:
            c = json.load(f)
        c["process"]["terminal"] = False
        c["process"]["args"] = ["sh", "-c", PROBE]
        c["process"]["cwd"] = "/task"
        c["root"] = {"path": rootfs, "readonly": False}
        c["mounts"].append({"destination": "/task", "type": "bind", "source": task, "options": ["rbind", "rw"]})
        with open(f"{bundle}/config.json", "w") as f:
            json.dump(c, f)
        t0 = time.time_ns()
        subprocess.run([runc, "--root", f"{work}/runc", "run", "--bundle", bundle, f"bench{i}"], check=True,
                       stdin=subprocess.DEVNULL)
        out.append(started_after(f"{task}/started", t0))
    return out


def through_pool(pool, n, body):
    out = []
    for _ in range(n):
        t0 = time.time_ns()
        status, res = pool.call("POST", "/v1/jobs", {"command": ["sh", "-c", PROBE], **body})
        if status != 201:
            raise RuntimeError(f"submit: {status} {res}")
        jid = res["id"]
        j = pool.wait_jobs([jid], timeout=60)[jid]
        if j["state"] != "succeeded":
            raise RuntimeError(f"job {jid}: {j['state']} {j.get('message')}")
        out.append(started_after(f"{pool.dir}/agents/n1/job-{jid}-task-0-attempt-1/work/started", t0))
    return out


def main():
    gpupool = os.path.abspath(sys.argv[1])
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    work = tempfile.mkdtemp(prefix="gpupool-driver-bench-")
    os.chmod(work, 0o711)
    rows = {}
    oci = os.geteuid() == 0 and shutil.which("runc") is not None
    rootfs = f"{work}/rootfs"
    if oci:
        make_rootfs(rootfs)
    rows["by hand, process"] = summary(by_hand_process(n, work))
    if oci:
        rows["by hand, runc"] = summary(by_hand_runc(n, work, rootfs))
    pool = Pool(gpupool)
    try:
        pool.start_server()
        pool.start_agent("n1", "2xH100", interval="500ms")
        pool.wait_nodes(1)
        through_pool(pool, 3, {})  # warm: the first start pays for page cache and connections
        rows["gpupool, process"] = summary(through_pool(pool, n, {}))
        if oci:
            through_pool(pool, 3, {"driver": "oci", "rootfs": rootfs})
            rows["gpupool, oci"] = summary(through_pool(pool, n, {"driver": "oci", "rootfs": rootfs}))
    finally:
        pool.stop()
    for name, r in rows.items():
        print(f"{name:18} median {r['median_ms']:8.2f} ms   p90 {r['p90_ms']:8.2f} ms   min {r['min_ms']:8.2f} ms   (n={r['n']})")
    print(json.dumps(rows))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
