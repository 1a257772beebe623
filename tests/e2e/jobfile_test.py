"""Job files: `gpupool run job.toml` submits the job a TOML file describes (the API's fields,
plus `script`), and `--dry-run` shows what would be submitted and where it would land now,
storing nothing. What the dry run says is where the job then lands, and the same job given as
`gpupool submit` flags lands the same way. Bad files are refused naming the file, the line and
the field."""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from pool import Checks, Pool  # noqa: E402

JOB = """# a training job, as a team keeps it in git
name = "train-small"
script = '''
echo "lr=$LR on $GPUPOOL_GPUS"
echo "$API_KEY" | wc -c
'''
gpus = 2
tasks = 1
gpu_model = ["H100"]
cpu = 1
memory = "1GiB"
time = "10m"
priority = 3
max_retries = 2
env = { LR = "0.01" }
secrets = { API_KEY = "@{secret}" }
"""


def main():
    gpupool = os.path.abspath(sys.argv[1])
    c = Checks()
    pool = Pool(gpupool)
    try:
        pool.start_server()
        pool.start_agent("n1", "4xH100")
        pool.start_agent("n2", "2xA100")
        pool.wait_nodes(2)
        secret = os.path.join(pool.dir, "api.key")
        with open(secret, "w") as f:
            f.write("k3y-from-a-file\n")
        path = os.path.join(pool.dir, "job.toml")
        with open(path, "w") as f:
            f.write(JOB.replace("{secret}", secret))
        run = lambda *a: pool.cli("run", *a)  # noqa: E731
        before = len(pool.all_jobs())
        dry = run(path, "--dry-run")
        c.check(dry.returncode == 0 and "would run on n1 GPUs [0,1]" in dry.stdout,
                f"--dry-run says where it would land: {dry.stdout.strip()} {dry.stderr.strip()}")
        dj = json.loads(run(path, "--dry-run", "--json").stdout)
        c.check(dj["job"]["name"] == "train-small" and dj["job"]["gpus_per_task"] == 2 and dj["job"]["secrets"] == ["API_KEY"]
                and dj["job"]["time_limit_ms"] == 600000, f"... and what would be submitted: {dj['job'].get('name')}")
        c.check(len(pool.all_jobs()) == before, "a dry run stores nothing")
        r = run(path)
        jid = r.stdout.strip()
        c.check(r.returncode == 0 and jid, f"gpupool run submits it: {r.stderr.strip()}")
        jobs = pool.wait_jobs([jid], timeout=30)
        j = jobs[jid]
        c.check(j["state"] == "succeeded" and j["node"] == dj["placement"][0]["node"] and j["gpus"] == [0, 1],
                f"it landed where the dry run said ({j['node']} {j['gpus']})")
        out = pool.call("GET", f"/v1/jobs/{jid}/logs?task=0&stream=stdout")[1]
        c.check(isinstance(out, str) and "lr=0.01 on 0,1" in out and "16" in out,
                f"the script ran with its env and the secret from its file: {out!r}")
        c.check(j["priority"] == 3 and j["env"].get("LR") == "0.01" and j["memory_mib"] == 1024, "every field reached the job")
        # The same job by flags: the same placement, on the pool as it stands.
        r = subprocess.run([gpupool, "submit", "--server", f"127.0.0.1:{pool.port}", "--token", pool.token, "--name", "train-small",
                            "--gpus", "2", "--gpu-model", "H100", "--cpu", "1", "--memory", "1GiB", "--time", "10m",
                            "--priority", "3", "--", "true"], capture_output=True, text=True)
        sid = r.stdout.strip()
        s = pool.wait_jobs([sid], timeout=30)[sid]
        c.check((s["node"], s["gpus"]) == (j["node"], j["gpus"]), f"the same job by flags lands the same way ({s['node']} {s['gpus']})")
        # Where it could not run now: the dry run says why.
        big = os.path.join(pool.dir, "big.toml")
        with open(big, "w") as f:
            f.write('command = ["true"]\ngpus = 8\n')
        dry = run(big, "--dry-run")
        c.check(dry.returncode == 0 and "could not run" in dry.stdout and "GPUs: asked 8" in dry.stdout,
                f"a job no node can hold: the dry run says why: {dry.stdout.strip()}")
        for text, want in (('command = ["true"]\ngpus = "two"\n', "job.toml:2: field 'gpus': expected a whole number"),
                           ('command = ["true"]\n\nnodes = 2\n', "job.toml:3: field 'nodes': not a job field"),
                           ('command = ["true"\n', "job.toml:"),
                           ('gpus = 1\n', "field 'command' (or 'script'): required"),
                           ('command = ["true"]\nenv = { A = 1 }\n', "field 'env.A': expected a string"),
                           ('command = ["true"]\nsecrets = { K = "@/no/such/file" }\n', "field 'secrets.K': cannot read /no/such/file")):
            with open(path, "w") as f:
                f.write(text)
            r = run(path)
            c.check(r.returncode == 2 and want in r.stderr, f"{text!r} is refused: {r.stderr.strip()}")
        with open(path, "w") as f:
            f.write('command = ["true"]\ngpus = 99\n')
        r = run(path)
        c.check(r.returncode == 1 and "gpus" in r.stderr, f"what the server refuses is said as for submit: {r.stderr.strip()}")
    finally:
        pool.stop()
    return c.done()


if __name__ == "__main__":
    sys.exit(main())
