"""Crash safety of acquiring capacity: the server is killed with SIGKILL at random moments
while it buys and releases `local` nodes (ROUNDS times, default 10; `AUTOSCALE_CRASH_ROUNDS=50`
for the long run), and started again each time. After each restart it adopts what the
provisioner lists. At the end: every job ran, no instance is left (none orphaned), and no
claim ever had more instances than it asked for (nothing bought twice for one claim). Seeded."""
import json
import os
import random
import signal
import sys
import time

from pool import Checks, Pool

FLEET = """
[[provider]]
name = "lab"
kind = "cloud"
provisioner = "local"
local = { seed = 11, boot_delay = "100ms", boot_delay_max = "1500ms" }

[[site]]
name = "here"

[[offer]]
name = "h100x8"
provider = "lab"
site = "here"
gpu_model = "H100"
gpus = 8
price = 16.00
max_nodes = 6
boot_time = "3s"
min_billed = "1s"
"""


def main(gpupool):
    c = Checks()
    rounds = int(os.environ.get("AUTOSCALE_CRASH_ROUNDS", "10"))
    rng = random.Random(5)
    pool = Pool(gpupool)
    seen = {}  # instance -> claim, over the whole run
    try:
        os.makedirs(pool.dir, exist_ok=True)
        os.chmod(pool.dir, 0o711)
        with open(f"{pool.dir}/fleet.toml", "w") as f:
            f.write(FLEET)
        args = ("--fleet", f"{pool.dir}/fleet.toml", "--scale-down-idle", "1s")
        pool.start_server(*args)
        jobs = []
        for r in range(rounds):
            for _ in range(rng.randint(1, 4)):
                jobs.append(pool.submit_retrying({"command": ["sh", "-c", f"sleep {rng.choice([0, 0.5, 1])}"],
                                                  "gpus": rng.choice([1, 4, 8]), "name": f"r{r}"}))
            time.sleep(rng.uniform(0.2, 3.0))  # somewhere in planning, creating, booting, running or releasing
            for iid, i in pool.local_instances().items():
                seen.setdefault(iid, i["claim"])
            pool.kill_server()
            pool.start_server(*args)
        done = pool.wait_jobs(jobs, timeout=180)
        c.check(all(done[j]["state"] == "succeeded" for j in jobs),
                "every job ran: " + ", ".join(f"{j}:{done[j]['state']}" for j in jobs if done[j]["state"] != "succeeded"))
        deadline = time.time() + 90
        while time.time() < deadline and pool.local_instances():
            for iid, i in pool.local_instances().items():
                seen.setdefault(iid, i["claim"])
            time.sleep(0.5)
        left = pool.local_instances()
        if left:
            status, offers = pool.call("GET", "/v1/offers")
            status, nodes = pool.call("GET", "/v1/nodes")
            print("offers", json.dumps(offers)[:400])
            print("nodes", [(n["name"], n["state"], n.get("claim"), n["draining"]) for n in nodes.get("nodes", [])])
            print("queued", [j["id"] for j in pool.all_jobs() if j["state"] == "queued"])
        c.check(not left, f"no instance left behind after {rounds} crashes: {list(left)}")
        per_claim = {}
        for iid, claim in seen.items():
            per_claim.setdefault(claim, []).append(iid)
        twice = {k: v for k, v in per_claim.items() if len(v) > 1}
        c.check(not twice, f"no claim bought twice: {twice}")
        c.check(len(seen) >= 1, f"nodes were bought: {len(seen)}")
        print(f"{rounds} crashes, {len(jobs)} jobs, {len(seen)} instances over {len(per_claim)} claims")
    finally:
        pool.stop()
    return c.done()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
