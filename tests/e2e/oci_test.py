"""The oci driver on real containers: runc, with a busybox-static root file system built here
and now, and CDI specs written for two fake GPUs (device nodes that are /dev/full and /dev/zero
on the host). And the process driver's limits on the same node, where its cgroups allow (v1
here): memory, processes, and the other GPU's device denied.

- A task runs as its tenant's unix user, in its own root, with its directory at /task; the
  agent's work directory (its credential) is not there to read.
- Each task sees exactly the CDI device, variables and mounts of the GPU it was given, not the
  other GPU's.
- A task over its memory limit ends OOM-killed, and the job says so.
- A fork bomb stops at the process limit (--pids-limit) and the node goes on.
- --read-only-root: the root cannot be written, /task can.
- An image (an OCI image layout made with umoci) is unpacked by the node's --oci-unpack tool
  and runs.
- A node that does not offer oci never gets an oci job: `explain` says why it waits.
- Bad oci submissions are refused naming the field.
- The process driver (cgroups): a task given one GPU cannot open the other's device node; over
  its memory limit it ends OOM-killed, saying so; a fork bomb stops at the process limit."""
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from pool import Checks, Pool  # noqa: E402


def make_rootfs(path):
    os.makedirs(f"{path}/bin")
    shutil.copy(shutil.which("busybox") or "/bin/busybox", f"{path}/bin/busybox")
    names = subprocess.run([f"{path}/bin/busybox", "--list"], capture_output=True, text=True, check=True).stdout.split()
    for n in names:
        if n != "busybox":
            os.symlink("busybox", f"{path}/bin/{n}")
    for d in ("proc", "dev", "sys", "tmp", "etc", "usr/lib"):
        os.makedirs(f"{path}/{d}", exist_ok=True)


CDI = """cdiVersion: "0.6.0"
kind: example.com/gpu
containerEdits:
  env: [CDI_SPEC=example]
  mounts:
    - hostPath: {driver}
      containerPath: /usr/lib/fake-driver
      options: [ro, nosuid, nodev, bind]
devices:
  - name: "0"
    containerEdits:
      deviceNodes:
        - path: /dev/fakegpu0
          hostPath: /dev/full
      env: [FAKE_GPU=zero]
  - name: "1"
    containerEdits:
      deviceNodes:
        - path: /dev/fakegpu1
          hostPath: /dev/zero
      env: [FAKE_GPU=one]
"""


def main():
    gpupool = os.path.abspath(sys.argv[1])
    c = Checks()
    if os.geteuid() != 0:
        print("the oci driver needs root (runc); this run is not root: nothing checked")
        return 0
    if not shutil.which("runc") or not (shutil.which("busybox") or os.path.exists("/bin/busybox")):
        print("FAIL runc and busybox-static are needed (scripts/bootstrap installs them)")
        return 1
    pool = Pool(gpupool)
    try:
        root = f"{pool.dir}/rootfs"
        make_rootfs(root)
        driver = f"{pool.dir}/driver"
        os.makedirs(driver)
        with open(f"{driver}/libfake.so", "w") as f:
            f.write("fake driver library\n")
        os.makedirs(f"{pool.dir}/cdi")
        with open(f"{pool.dir}/cdi/fake.yaml", "w") as f:
            f.write(CDI.format(driver=driver))
        pool.start_server()
        out = pool.shared_dir(f"{pool.dir}/out")
        cdi = ("--cdi-spec-dir", f"{pool.dir}/cdi", "--cdi-kind", "example.com/gpu", "--pids-limit", "64")
        unpack = None
        if shutil.which("umoci"):
            unpack = "umoci unpack --image {image} {dir}"
            cdi += ("--oci-unpack", unpack)
        log = open(f"{pool.dir}/agent.log", "w")
        pool.start_agent("n1", "2xH100", extra=cdi, stderr=log)
        pool.start_agent("plain", "2xH100", extra=("--drivers", "process"))
        pool.wait_nodes(2)
        pool.call("POST", "/v1/nodes/plain/drain")  # the plain node's own checks come at the end
        r = pool.cli("tenant", "create", "team-a", "--unix-user", "daemon")
        c.check(r.returncode == 0, f"tenant team-a maps to daemon: {r.stderr}")
        node = pool.call("GET", "/v1/nodes/n1")[1]
        c.check("oci" in node.get("drivers", []), f"n1 offers the oci driver: {node.get('drivers')}")

        # --- identity, isolation, CDI ---
        agent_dir = f"{pool.dir}/agents/n1"
        probe = ("id -u; ls /dev | grep fakegpu; echo gpu=$FAKE_GPU spec=$CDI_SPEC; cat /usr/lib/fake-driver/libfake.so; "
                 f"cat {agent_dir}/node.credential 2>/dev/null || echo no-credential; "
                 f"ls {agent_dir} >/dev/null 2>&1 || echo no-agent-dir; pwd; touch here && echo task-writable; sleep 2")
        ids = []
        for _ in range(2):
            status, body = pool.call("POST", "/v1/jobs", {"command": ["sh", "-c", probe], "gpus": 1, "tenant": "team-a",
                                                         "driver": "oci", "rootfs": root})
            c.check(status == 201, f"an oci job is accepted ({status} {body})")
            ids.append(body.get("id"))
        jobs = pool.wait_jobs(ids, timeout=60)
        seen = set()
        for i in ids:
            j = jobs[i]
            text = pool.call("GET", f"/v1/jobs/{i}/logs?task=0&stream=stdout")[1]
            lines = text.splitlines() if isinstance(text, str) else []
            gpu = j["gpus"][0] if j.get("gpus") else None
            c.check(j["state"] == "succeeded", f"job {i} ran in its container ({j['state']}: {j.get('message')})")
            c.check(lines[:1] == ["1"], f"job {i} ran as its tenant's user, daemon (uid 1): {lines[:1]}")
            c.check(f"fakegpu{gpu}" in lines and sum(1 for x in lines if x.startswith("fakegpu")) == 1,
                    f"job {i} (GPU {gpu}) sees its own device only: {[x for x in lines if 'fakegpu' in x]}")
            want = {0: "zero", 1: "one"}.get(gpu)
            c.check(f"gpu={want} spec=example" in lines, f"job {i} has its GPU's CDI variables and the spec's: {lines[2:3]}")
            c.check("fake driver library" in lines, f"job {i} sees the spec's mount")
            c.check("no-credential" in lines and "no-agent-dir" in lines, f"job {i} cannot read the agent's work dir")
            c.check("/task" in lines and "task-writable" in lines, f"job {i} works in /task, its own")
            seen.add(gpu)
        c.check(seen == {0, 1}, f"the two jobs ran side by side on the two GPUs: {seen}")
        config = open(f"{agent_dir}/job-{ids[0]}-task-0-attempt-1/bundle/config.json").read()
        c.check('"/dev/fakegpu' in config and '"allow": false' in config, "its config.json denies devices but its GPU's")

        # --- memory limit: OOM-killed, and said so ---
        status, body = pool.call("POST", "/v1/jobs", {
            "command": ["sh", "-c", "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived"],
            "memory": "32MiB", "driver": "oci", "rootfs": root})
        oom = body.get("id")
        j = pool.wait_jobs([oom], timeout=60)[oom]
        c.check(j["state"] == "failed" and "OOM-killed" in j.get("message", "") and "32 MiB" in j.get("message", ""),
                f"over its memory limit the task ends OOM-killed, and the job says so ({j['state']}: {j.get('message')})")
        c.check(j.get("signal") == 9, f"... killed by signal 9 ({j.get('exit_code')}, {j.get('signal')})")

        # --- a fork bomb stops at the process limit ---
        # The forks run in a subshell, which dies at the first that fails; the count is taken
        # with builtins only (no fork is left to take).
        bomb = ("(for i in $(seq 300); do sleep 3 & done); set -- /proc/[0-9]*; echo alive=$#; wait")
        status, body = pool.call("POST", "/v1/jobs", {"command": ["sh", "-c", bomb], "driver": "oci", "rootfs": root})
        fb = body.get("id")
        j = pool.wait_jobs([fb], timeout=60)[fb]
        text = pool.call("GET", f"/v1/jobs/{fb}/logs?task=0&stream=stdout")[1]
        err = pool.call("GET", f"/v1/jobs/{fb}/logs?task=0&stream=stderr")[1]
        alive = [int(x.split("=")[1]) for x in (text.splitlines() if isinstance(text, str) else []) if x.startswith("alive=")]
        c.check(alive and alive[0] <= 64, f"the fork bomb's processes stopped at the limit of 64: {alive}")
        c.check(isinstance(err, str) and "fork" in err, f"... its forks past it failed: {str(err)[:120]!r}")
        c.check(pool.call("GET", "/v1/nodes/n1")[1].get("state") == "ready", "the node goes on")

        # --- a read-only root ---
        status, body = pool.call("POST", "/v1/jobs", {
            "command": ["sh", "-c", "touch /bin/x 2>/dev/null && echo root-writable || echo root-read-only; touch /task/x && echo task-ok"],
            "driver": "oci", "rootfs": root, "read_only_root": True})
        ro = body.get("id")
        pool.wait_jobs([ro], timeout=60)
        text = pool.call("GET", f"/v1/jobs/{ro}/logs?task=0&stream=stdout")[1]
        c.check(isinstance(text, str) and "root-read-only" in text and "task-ok" in text,
                f"--read-only-root: the root cannot be written, /task can: {text!r}")

        # --- an image, unpacked by the node's OCI tool ---
        if unpack:
            layout = f"{pool.dir}/layout"
            bundle = f"{pool.dir}/image-bundle"
            for cmd in (["umoci", "init", "--layout", layout], ["umoci", "new", "--image", f"{layout}:v1"],
                        ["umoci", "unpack", "--image", f"{layout}:v1", bundle]):
                subprocess.run(cmd, check=True, capture_output=True)
            subprocess.run(["cp", "-a", f"{root}/.", f"{bundle}/rootfs/"], check=True)
            with open(f"{bundle}/rootfs/etc/made-by", "w") as f:
                f.write("umoci\n")
            subprocess.run(["umoci", "repack", "--image", f"{layout}:v1", bundle], check=True, capture_output=True)
            r = subprocess.run([gpupool, "submit", "--server", f"127.0.0.1:{pool.port}", "--token", pool.token,
                                "--image", f"{layout}:v1", "--", "cat", "/etc/made-by"], capture_output=True, text=True)
            img = r.stdout.strip()
            j = pool.wait_jobs([img], timeout=90)[img]
            text = pool.call("GET", f"/v1/jobs/{img}/logs?task=0&stream=stdout")[1]
            c.check(j["state"] == "succeeded" and isinstance(text, str) and "umoci" in text,
                    f"`submit --image` ran in the image the node unpacked ({j['state']}: {j.get('message')}, {text!r})")
        else:
            print("note: umoci is not installed; the image check did not run")

        # --- where oci is not offered, and what is refused ---
        pool.call("POST", "/v1/nodes/plain/undrain")
        pool.call("POST", "/v1/nodes/n1/drain")
        status, body = pool.call("POST", "/v1/jobs", {"command": ["true"], "driver": "oci", "rootfs": root})
        waiting = body.get("id")
        time.sleep(1.0)
        j = pool.call("GET", f"/v1/jobs/{waiting}")[1]
        r = pool.cli("explain", waiting)
        c.check(j["state"] == "queued" and "driver" in r.stdout and "oci" in r.stdout,
                f"with only a process node open, an oci job waits and explain says why ({j['state']}): {r.stdout.strip()[:300]}")
        pool.call("POST", "/v1/nodes/n1/undrain")
        j = pool.wait_jobs([waiting], timeout=60)[waiting]
        c.check(j["state"] == "succeeded" and j.get("node") == "n1", f"... and runs on n1 once it is open ({j['state']}, {j.get('node')})")
        for body, field in (({"command": ["true"], "driver": "oci"}, "rootfs"),
                            ({"command": ["true"], "driver": "docker", "rootfs": root}, "driver"),
                            ({"command": ["true"], "rootfs": root}, "rootfs"),
                            ({"command": ["true"], "driver": "oci", "rootfs": "relative/path"}, "rootfs"),
                            ({"command": ["true"], "driver": "oci", "rootfs": root, "image": "x:y"}, "rootfs")):
            status, res = pool.call("POST", "/v1/jobs", body)
            msg = res.get("error", "") if isinstance(res, dict) else str(res)
            c.check(status == 400 and f"'{field}'" in msg, f"{body} is refused naming '{field}': {status} {msg}")
        log.flush()
        c.check("oci driver: on" in open(f"{pool.dir}/agent.log").read(), "the agent said at start that it runs oci tasks")
        # --- the process driver's limits, on the same node ---
        if os.path.isdir("/sys/fs/cgroup/devices") or os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
            devices = os.path.isdir("/sys/fs/cgroup/devices")
            pool.call("POST", "/v1/nodes/plain/drain")  # on n1, whose CDI specs name the GPUs' nodes
            probe = ("head -c1 /dev/full >/dev/null 2>&1 && echo gpu0-node-opens || echo gpu0-node-denied; "
                     "head -c1 /dev/zero >/dev/null 2>&1 && echo gpu1-node-opens || echo gpu1-node-denied; sleep 1")
            pids = []
            for _ in range(2):
                status, body = pool.call("POST", "/v1/jobs", {"command": ["sh", "-c", probe], "gpus": 1})
                pids.append(body.get("id"))
            jobs = pool.wait_jobs(pids, timeout=60)
            for i in pids:
                gpu = jobs[i]["gpus"][0]
                text = pool.call("GET", f"/v1/jobs/{i}/logs?task=0&stream=stdout")[1]
                mine, other = (f"gpu{gpu}-node-opens", f"gpu{1 - gpu}-node-denied")
                if devices:
                    c.check(isinstance(text, str) and mine in text and other in text,
                            f"a process task given GPU {gpu} opens its device node and not the other's: {text!r}")
            status, body = pool.call("POST", "/v1/jobs", {
                # (not from /dev/zero: a task given no GPU may not open the fake GPU 1's node)
                "command": ["sh", "-c", "x=$(yes aaaaaaaa | head -c 200000000); echo survived"], "memory": "32MiB"})
            oom = body.get("id")
            j = pool.wait_jobs([oom], timeout=60)[oom]
            c.check(j["state"] == "failed" and "OOM-killed" in j.get("message", ""),
                    f"a process task over its memory limit ends OOM-killed ({j['state']}: {j.get('message')})")
            # Without a pid namespace /proc shows the host's processes: the subshell counts its own
            # forks in a file, read back with a builtin.
            counted = ("(i=0; while [ $i -lt 300 ]; do sleep 3 & i=$((i+1)); echo $i > started; done); "
                       "read n < started; echo alive=$n; wait")
            status, body = pool.call("POST", "/v1/jobs", {"command": ["sh", "-c", counted]})
            fb = body.get("id")
            pool.wait_jobs([fb], timeout=60)
            text = pool.call("GET", f"/v1/jobs/{fb}/logs?task=0&stream=stdout")[1]
            alive = [int(x.split("=")[1]) for x in (text.splitlines() if isinstance(text, str) else []) if x.startswith("alive=")]
            c.check(alive and alive[0] <= 64, f"a process task's fork bomb stops at the limit of 64: {alive}")
        else:
            print("note: no cgroup hierarchy here; the process driver's limits were not checked")
        leftover = subprocess.run(["runc", "--root", f"{agent_dir}/runc", "list", "-q"], capture_output=True, text=True).stdout.split()
        c.check(not leftover, f"no container is left behind: {leftover}")
    finally:
        pool.stop()
    return c.done()


if __name__ == "__main__":
    sys.exit(main())
