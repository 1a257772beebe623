"""Who is who, and what a job may touch.

- A second agent with a live node's name is refused with a message naming the conflict, and
  stops; the first is untouched.
- An agent restarted on its work directory proves it is the same node (its stored credential)
  and gets its node back, adopting its running task.
- A relative --work-dir works (it is made absolute at start).
- When the agent runs as root, a job is not root, cannot read the server's or the agent's
  tokens, cannot list the agent's work directory, and does not see the agent's environment."""
import os
import subprocess
import sys
import time

from pool import Checks, Pool


def main(gpupool):
    gpupool = os.path.abspath(gpupool)
    c = Checks()
    pool = Pool(gpupool)
    try:
        pool.start_server()
        out = pool.shared_dir(os.path.join(pool.dir, "out"))
        env = dict(os.environ, GPUPOOL_AGENT_SECRET="agent-s3cret")
        first = pool.start_agent("alpha", "2xH100", env=env)
        pool.wait_nodes(1)

        # --- a second agent in the same name ---
        twin = subprocess.run(
            [gpupool, "agent", "--server", f"127.0.0.1:{pool.port}", "--join-token-file", f"{pool.dir}/server/join.token",
             "--simulate-gpus", "2xH100", "--name", "alpha", "--address", "127.0.0.9", "--work-dir", f"{pool.dir}/agents/twin",
             "--metrics-listen", "off"], capture_output=True, text=True, timeout=30)
        c.check(twin.returncode != 0, f"the twin agent stops (exit {twin.returncode})")
        c.check("'alpha'" in twin.stderr and "127.0.0.1" in twin.stderr and "127.0.0.9" in twin.stderr and "--name" in twin.stderr,
                f"... saying which node, both agents' addresses and what to do: {twin.stderr.strip()[:300]}")
        nodes = {n["name"]: n for n in pool.call("GET", "/v1/nodes")[1]["nodes"]}
        c.check(nodes["alpha"]["state"] == "ready" and nodes["alpha"]["address"] == "127.0.0.1",
                f"the first agent keeps its node ({nodes['alpha']['state']}, {nodes['alpha']['address']})")

        # --- what a job sees ---
        probe = (f"id -u; cat {pool.dir}/server/admin.token || echo no-admin-token; "
                 f"cat {pool.dir}/server/join.token || echo no-join-token; "
                 f"cat {pool.dir}/agents/alpha/node.credential || echo no-credential; "
                 f"ls {pool.dir}/agents/alpha >/dev/null 2>&1 || echo no-listing; "
                 f"cat {pool.dir}/server/gpupool.db >/dev/null 2>&1 || echo no-store; "
                 f"cat {pool.dir}/agents/alpha/job-1-task-0-attempt-1/stdout >/dev/null 2>&1 || echo no-output-file; "
                 "echo secret=${GPUPOOL_AGENT_SECRET:-none}; echo pwd=$(pwd); touch here && echo can-write-cwd")
        jid = pool.submit(["sh", "-c", probe], name="probe")
        pool.wait_jobs([jid], timeout=30)
        text = pool.call("GET", f"/v1/jobs/{jid}/logs?task=0&stream=stdout")[1]
        lines = text.splitlines()
        admin = pool.token
        join = open(f"{pool.dir}/server/join.token").read().strip()
        cred = pool.credential("alpha")
        if os.geteuid() == 0:
            c.check(lines and lines[0] != "0", f"the job's id -u is {lines[:1]}, not 0")
            for what, secret, word in [("admin token", admin, "no-admin-token"), ("join token", join, "no-join-token"),
                                       ("node credential", cred, "no-credential")]:
                c.check(secret not in text and word in lines, f"the job cannot read the {what}")
            c.check("no-listing" in lines, "the job cannot list the agent's work directory")
            c.check("no-store" in lines, "the job cannot read the server's store")
            c.check("no-output-file" in lines, "the job cannot read output files in the agent's directory")
        else:
            print("not root: the job runs as the agent's own user; the uid checks are skipped")
        c.check("secret=none" in lines, f"the job does not see the agent's environment ({[x for x in lines if 'secret' in x]})")
        c.check("can-write-cwd" in lines and any(x.startswith("pwd=") and x.endswith("/work") for x in lines),
                f"the job runs in its own writable directory ({[x for x in lines if x.startswith('pwd')]})")

        # --- the restarted agent gets its node back and adopts its task ---
        long = pool.submit(["sh", "-c", f"echo start >> {out}/long.runs; sleep 4; echo finished"], name="long")
        deadline = time.time() + 20
        while time.time() < deadline and pool.call("GET", f"/v1/jobs/{long}")[1]["state"] != "running":
            time.sleep(0.1)
        os.killpg(first.pid, 9)
        first.wait()
        again = pool.start_agent("alpha", "2xH100")
        final = pool.wait_jobs([long], timeout=30)
        j = final[long]
        c.check(again.poll() is None, "the restarted agent was taken back (not refused as a twin)")
        c.check(j["state"] == "succeeded" and j["attempt"] == 1, f"its task was adopted and ran once ({j['state']}, attempt {j['attempt']})")
        runs = open(f"{out}/long.runs").read().splitlines()
        c.check(len(runs) == 1, f"started once ({len(runs)})")

        # --- a relative --work-dir ---
        pool.start_agent("relative", "1xA100", work="rel/work", cwd=pool.dir)
        pool.wait_nodes(2)
        slow = pool.submit(["sh", "-c", "sleep 3; echo fine"], gpus=1, gpu_model="A100", name="slow")
        j = pool.wait_jobs([slow], timeout=30)[slow]
        c.check(j["state"] == "succeeded" and j["attempt"] == 1 and j["node"] == "relative",
                f"a job on an agent with a relative --work-dir runs past its lease ({j['state']}, attempt {j['attempt']}, {j['message']})")
    finally:
        pool.stop()
    return c.done()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
