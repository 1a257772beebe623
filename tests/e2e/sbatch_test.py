"""Slurm batch scripts, unchanged (tests/slurm/*.sh), through `gpupool sbatch` on a live pool of
three nodes (two of 4 H100, one of 2 A100): each job's tasks see the SLURM_* values their script
reads, outputs land where --output and --error say (%x, %j, %A_%a), srun launches the tasks on
every node (with SLURM_PROCID and SLURM_LOCALID), the multi-node torchrun recipe finds its head
node through `scontrol show hostnames`, arrays, dependencies, --exclusive, --constraint,
--partition/--account/--qos, --chdir and --export do what Slurm's do, and the unsupported
directive is refused with its line. The same jobs as job files (`gpupool run`) land the same
way."""
import glob
import json
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from pool import Checks, Pool  # noqa: E402

SCRIPTS = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "slurm"))
FAKE_TORCHRUN = """#!/bin/sh
# A stand-in for torchrun (no PyTorch here): what it was given, on which node.
echo "node=$SLURM_NODEID procid=$SLURM_PROCID args=$*" > "$OUT/ddp.$SLURM_NODEID"
"""


def env_of(path):
    out = {}
    if os.path.exists(path):
        for line in open(path):
            k, _, v = line.rstrip("\n").partition("=")
            out[k] = v
    return out


def main():
    gpupool = os.path.abspath(sys.argv[1])
    c = Checks()
    pool = Pool(gpupool)
    try:
        fleet = os.path.join(pool.dir, "fleet.toml")
        with open(fleet, "w") as f:
            f.write('[[priority_class]]\nname = "high"\nvalue = 100\n')
        pool.start_server("--fleet", fleet)
        for name, gpus in (("h1", "4xH100"), ("h2", "4xH100"), ("a1", "2xA100")):
            pool.start_agent(name, gpus)
        pool.wait_nodes(3)
        out = pool.shared_dir(os.path.join(pool.dir, "out"))
        os.makedirs(os.path.join(out, "work-here"), exist_ok=True)
        os.chmod(os.path.join(out, "work-here"), 0o777)
        tools = os.path.join(pool.dir, "tools")
        os.makedirs(tools)
        with open(os.path.join(tools, "torchrun"), "w") as f:
            f.write(FAKE_TORCHRUN)
        os.chmod(tools, 0o755)
        os.chmod(os.path.join(tools, "torchrun"), 0o755)
        os.chmod(pool.dir, 0o711)
        env = dict(os.environ, OUT=out, FROM_SUBMITTER="yes", PATH=tools + ":" + os.environ["PATH"], GPUPOOL_TOKEN=pool.token,
                   GPUPOOL_ADDR=f"127.0.0.1:{pool.port}")

        def sbatch(*args):
            return subprocess.run([gpupool, "sbatch", *args], capture_output=True, text=True, cwd=out, env=env)

        ids = {}
        for script in ("01_single_gpu", "02_multi_gpu", "03_two_tasks_srun", "04_multinode_srun", "05_multinode_torchrun", "06_array",
                       "09_exclusive", "10_constraint", "11_partition_account_qos", "12_chdir", "13_export", "14_error_split"):
            r = sbatch("--parsable", os.path.join(SCRIPTS, script + ".sh"))
            c.check(r.returncode == 0 and r.stdout.strip().isdigit(), f"{script} submitted: {r.stdout.strip()} {r.stderr.strip()}")
            ids[script] = r.stdout.strip()
        r = sbatch("-J", "from-cli", os.path.join(SCRIPTS, "16_args_and_label.sh"), "alpha", "beta")
        m = re.match(r"Submitted batch job (\d+)$", r.stdout.strip())
        c.check(m is not None, f"sbatch says what Slurm's says: {r.stdout.strip()}")
        ids["16"] = m.group(1) if m else ""
        r = sbatch("--parsable", os.path.join(SCRIPTS, "07_prepare.sh"))
        prep = r.stdout.strip()
        r = sbatch("--parsable", f"--dependency=afterok:{prep}", os.path.join(SCRIPTS, "08_train_after.sh"))
        after = r.stdout.strip()
        r = sbatch(os.path.join(SCRIPTS, "15_unsupported.sh"))
        c.check(r.returncode == 2 and "15_unsupported.sh:3" in r.stderr and "--mail-type=END" in r.stderr,
                f"the unsupported directive is refused with its line: {r.stderr.strip()}")

        jobs = pool.wait_jobs([i for i in ids.values() if i] + [prep, after], timeout=120)
        for script, jid in ids.items():
            c.check(jobs[jid]["state"] == "succeeded", f"{script} succeeded ({jobs[jid]['state']}: {jobs[jid].get('message')})")

        def read(name):
            p = os.path.join(out, name)
            return open(p).read() if os.path.exists(p) else ""

        j = ids["01_single_gpu"]
        e = env_of(os.path.join(out, "single.env"))
        c.check(e.get("SLURM_JOB_ID") == j and e.get("SLURM_PROCID") == "0" and e.get("SLURM_NTASKS") == "1"
                and e.get("SLURM_NNODES") == "1" and e.get("SLURM_GPUS_ON_NODE") == "1" and e.get("SLURM_SUBMIT_DIR") == out
                and e.get("SLURM_JOB_NAME") == "single" and e.get("SLURM_NODEID") == "0" and e.get("SLURM_LOCALID") == "0",
                f"01: the SLURM_* values ({ {k: e.get(k) for k in ('SLURM_JOB_ID', 'SLURM_GPUS_ON_NODE', 'SLURM_SUBMIT_DIR')} })")
        c.check("with GPUs 0" in read(f"single-{j}.out"), f"01: the output is in single-{j}.out (%x-%j)")
        j = ids["02_multi_gpu"]
        e = env_of(os.path.join(out, "multi.env"))
        c.check(e.get("SLURM_GPUS_ON_NODE") == "4" and e.get("SLURM_CPUS_PER_TASK") == "1" and jobs[j]["memory_mib"] == 1024,
                f"02: 4 GPUs, a CPU per task, 1 GiB ({e.get('SLURM_GPUS_ON_NODE')}, {jobs[j]['memory_mib']})")
        c.check("gpus=0,1,2,3" in read(f"slurm-{j}.out"), "02: the default output, slurm-%j.out in the submit directory")
        t0, t1 = read("tasks.0"), read("tasks.1")
        c.check("proc=0 local=0 ntasks=2 gpu=0" in t0 and "proc=1 local=1 ntasks=2 gpu=1" in t1,
                f"03: srun ran two tasks, a GPU each: {t0.strip()} | {t1.strip()}")
        j = ids["04_multinode_srun"]
        procs = {int(p.rsplit(".", 1)[1]): env_of(p) for p in glob.glob(os.path.join(out, "mn.*"))}
        c.check(sorted(procs) == [0, 1, 2, 3], f"04: srun ran 4 tasks over 2 nodes ({sorted(procs)})")
        nodelist = procs.get(0, {}).get("SLURM_JOB_NODELIST", "")
        c.check(len(nodelist.split(",")) == 2 and all(p.get("SLURM_JOB_NODELIST") == nodelist for p in procs.values()),
                f"04: every task sees the same two-node SLURM_JOB_NODELIST ({nodelist})")
        ok = all(p.get("SLURM_NODEID") == str(k // 2) and p.get("SLURM_LOCALID") == str(k % 2) and p.get("SLURM_NTASKS") == "4"
                 and p.get("SLURM_NNODES") == "2" and p.get("SLURMD_NODENAME") == nodelist.split(",")[k // 2]
                 for k, p in procs.items())
        c.check(ok, "04: SLURM_PROCID k runs on node k//2 as local task k%2")
        text = read(f"mn-{j}.out")
        c.check(text.count("batch script on") == 1 and all(f"step {k} on" in text for k in range(4)),
                f"04: the output file has the batch script's lines once and every step's: {text!r}")
        d0, d1 = read("ddp.0"), read("ddp.1")
        head = nodelist and jobs[ids["05_multinode_torchrun"]]["placement"][0]["node"]
        c.check(d0.startswith("node=0 procid=0") and d1.startswith("node=1 procid=1") and f"--rdzv_endpoint {head}:29500" in d0
                and f"--rdzv_endpoint {head}:29500" in d1 and "--nnodes 2" in d0,
                f"05: one torchrun per node, both at the head node's rendezvous: {d0.strip()} | {d1.strip()}")
        j = ids["06_array"]
        for k, lr in enumerate(("0.1", "0.01", "0.001", "0.0001")):
            c.check(f"task {k} of {j} lr={lr}" in read(f"sweep-{j}_{k}.out"), f"06: element {k} wrote sweep-%A_%a ({j}_{k})")
        c.check(jobs[prep]["state"] == "succeeded" and jobs[after]["state"] == "succeeded"
                and jobs[after]["start_ms"] >= jobs[prep]["end_ms"] and "prepared" in read(f"train-after-{after}.out"),
                "07/08: --dependency=afterok ran the second after the first")
        j = ids["09_exclusive"]
        c.check(jobs[j]["gpus_per_task"] == 4 and "SLURM_GPUS_ON_NODE=4" in read(f"whole-{j}.out"), "09: --exclusive took a whole node")
        j = ids["10_constraint"]
        c.check(jobs[j]["node"] == "a1" and "node=a1" in read(f"constraint-{j}.out"), f"10: --constraint=A100 ran on a1 ({jobs[j]['node']})")
        j = ids["11_partition_account_qos"]
        c.check(jobs[j]["tenant"] == "team-a" and jobs[j]["priority"] == 100 and jobs[j]["node"] in ("h1", "h2")
                and "partition=h100 account=team-a qos=high" in read(f"team-{j}.out"),
                f"11: --partition h100 chose H100s, --account the tenant, --qos the class ({jobs[j]['tenant']}, {jobs[j]['priority']})")
        j = ids["12_chdir"]
        c.check(f"pwd={out}/work-here" in read(f"work-here/chdir-{j}.out") or f"pwd={out}/work-here" in read(f"chdir-{j}.out"),
                "12: --chdir: the script ran there")
        j = ids["13_export"]
        c.check("MODE=fast FROM_SUBMITTER=unset" in read(f"export-{j}.out"), f"13: --export=NONE,MODE=fast: {read(f'export-{j}.out')!r}")
        j = ids["14_error_split"]
        c.check(read(f"split-{j}.log").strip() == "to-stdout" and read(f"split-{j}.err").strip() == "to-stderr",
                "14: --output and --error apart")
        j = ids["16"]
        text = read(f"args-{j}.out")
        c.check(jobs[j]["name"] == "from-cli" and "args: alpha beta" in text and "0: hello" in text and "1: hello" in text,
                f"16: -J on the command line over the script's; the script's arguments; srun --label: {text!r}")

        # The same jobs as job files: the same placements on the pool as it stands (now idle).
        for script, job_file in (("01_single_gpu", 'command = ["true"]\ngpus = 1\n'),
                                 ("02_multi_gpu", 'command = ["true"]\ngpus = 4\ncpu = 1\nmemory = "1GiB"\n'),
                                 ("10_constraint", 'command = ["true"]\ngpus = 1\ngpu_model = ["A100"]\n'),
                                 ("04_multinode_srun", 'command = ["true"]\ntasks = 2\ngpus = 2\n')):
            path = os.path.join(pool.dir, script + ".toml")
            with open(path, "w") as f:
                f.write(job_file)
            dry_job = json.loads(pool.cli("run", path, "--dry-run", "--json").stdout)
            r = sbatch("--parsable", os.path.join(SCRIPTS, script + ".sh"))
            again = pool.wait_jobs([r.stdout.strip()], timeout=60)[r.stdout.strip()]
            want = [(p["node"], p["gpus"]) for p in dry_job["placement"]]
            got = [(p["node"], ",".join(str(g) for g in range(16) if p["gpu_mask"] >> g & 1)) for p in again["placement"]]
            c.check(want == got, f"{script}: as a job file it would land where the script did ({want} vs {got})")
    finally:
        pool.stop()
    return c.done()


if __name__ == "__main__":
    sys.exit(main())
