"""Acquiring capacity with the `local` provisioner, on a real server: the pool starts with no
node at all; 20 jobs arrive, among them a gang of 2 x 8 GPUs; the server buys nodes from the
cheapest feasible offers (real `gpupool agent` processes the provisioner starts after a boot
delay), their agents join carrying their claims, every job runs and ends, and the idle nodes
are released. The event log shows each step; at the end the provisioner holds no instance.
A stocked-out offer is asked once, and the next feasible one is asked at once."""
import json
import os
import subprocess
import sys
import time

from pool import Checks, Pool

FLEET = """
[[provider]]
name = "lab"
kind = "cloud"
provisioner = "local"
local = {{ seed = 7, boot_delay = "300ms", boot_delay_max = "900ms", stockout = ["cheapest-h100"] }}

[[site]]
name = "here"

[[offer]]
name = "cheapest-h100"
provider = "lab"
site = "here"
gpu_model = "H100"
gpus = 8
price = 8.00
max_nodes = 8
boot_time = "5s"
min_billed = "5s"

[[offer]]
name = "h100x8"
provider = "lab"
site = "here"
gpu_model = "H100"
gpus = 8
price = 16.00
max_nodes = 8
boot_time = "5s"
min_billed = "5s"

[[offer]]
name = "h100x4"
provider = "lab"
site = "here"
gpu_model = "H100"
gpus = 4
price = 12.00
max_nodes = 4
boot_time = "5s"
min_billed = "5s"
"""


def main(gpupool):
    c = Checks()
    pool = Pool(gpupool)
    try:
        os.makedirs(pool.dir, exist_ok=True)
        os.chmod(pool.dir, 0o711)  # the agents the pool starts run tasks as nobody, who passes through
        with open(f"{pool.dir}/fleet.toml", "w") as f:
            f.write(FLEET.format())
        pool.start_server("--fleet", f"{pool.dir}/fleet.toml", "--scale-down-idle", "2s")
        status, nodes = pool.call("GET", "/v1/nodes")
        c.check(status == 200 and not nodes.get("nodes"), f"no node to begin with: {nodes}")

        jobs = [pool.submit(["sh", "-c", "sleep 1"], gpus=8, tasks=2, name="gang")]
        for i in range(19):
            jobs.append(pool.submit(["sh", "-c", "sleep 1"], gpus=[1, 2, 4][i % 3], name=f"job-{i}", tenant=["team-a", "team-b"][i % 2]))
        try:
            done = pool.wait_jobs(jobs, timeout=120)
        except RuntimeError:
            for e in pool.all_events():
                print("event", e["type"], json.dumps(e["data"])[:200])
            raise
        c.check(all(done[j]["state"] == "succeeded" for j in jobs),
                "every job ran and succeeded: " + ", ".join(f"{j}:{done[j]['state']}" for j in jobs if done[j]["state"] != "succeeded"))
        status, offers = pool.call("GET", "/v1/offers")
        blocked = {b["what"]: b for b in offers.get("blocked", [])} if status == 200 else {}
        c.check("cheapest-h100" in blocked and blocked["cheapest-h100"]["scope"] == "offer" and blocked["cheapest-h100"]["seconds_left"] > 0,
                f"GET /v1/offers shows the stocked-out offer blocked, with its time left: {offers}")
        held = {o["name"]: o["running"] + o["booting"] for o in offers.get("offers", [])}
        c.check(held.get("cheapest-h100") == 0 and sum(held.values()) >= 2, f"and the nodes held of each offer: {held}")
        cli = subprocess.run([gpupool, "offers", "--server", f"127.0.0.1:{pool.port}", "--token", pool.token],
                             capture_output=True, text=True)
        c.check(cli.returncode == 0 and "blocked: offer cheapest-h100" in cli.stdout and "h100x4" in cli.stdout,
                f"`gpupool offers` lists them: {cli.stdout}{cli.stderr}")
        gang = done[jobs[0]]
        c.check(len({t["node"] for t in gang["placement"]}) >= 1 and len(gang["placement"]) == 2, f"the gang ran its 2 tasks: {gang['placement']}")

        # Released once idle (2 s here), each with its events.
        deadline = time.time() + 60
        events = []
        while time.time() < deadline:
            events = pool.all_events()
            types = [e["type"] for e in events]
            if types.count("io.gpupool.node.released") >= 1 and types.count("io.gpupool.node.released") == types.count("io.gpupool.node.ready"):
                break
            time.sleep(0.5)
        types = [e["type"] for e in events]
        provisioning = [e for e in events if e["type"] == "io.gpupool.node.provisioning"]
        failed = [e for e in events if e["type"] == "io.gpupool.node.provision_failed"]
        ready = [e for e in events if e["type"] == "io.gpupool.node.ready"]
        released = [e for e in events if e["type"] == "io.gpupool.node.released"]
        c.check(len(provisioning) >= 2, f"nodes were bought: {len(provisioning)}")
        c.check(any(e["data"]["offer"] == "cheapest-h100" and e["data"]["class"] == "capacity" for e in failed),
                f"the cheapest offer answered a stockout: {[e['data'] for e in failed]}")
        first_fail = min((e["sequence"] for e in failed if e["data"]["offer"] == "cheapest-h100"), default=None)
        asked_cheapest = [e for e in provisioning if e["data"]["offer"] == "cheapest-h100"]
        c.check(len(asked_cheapest) >= 1 and all(e["sequence"] < first_fail for e in asked_cheapest) if first_fail else False,
                f"the stocked-out offer is not asked again while blocked: {[e['sequence'] for e in asked_cheapest]} vs {first_fail}")
        c.check(ready and all(e["data"]["offer"] != "cheapest-h100" for e in ready), f"nodes joined from the next offers: {[e['data'] for e in ready]}")
        c.check(len(released) == len(ready) and len(ready) >= 1, f"every node that joined was released: {len(ready)} ready, {len(released)} released")
        c.check(types.index("io.gpupool.node.provisioning") < types.index("io.gpupool.node.ready") < types.index("io.gpupool.node.releasing")
                < types.index("io.gpupool.node.released"), "provisioning, ready, releasing, released, in that order")

        status, nodes = pool.call("GET", "/v1/nodes")
        c.check(status == 200 and not nodes.get("nodes"), f"released nodes leave the node list: {[n['name'] for n in nodes.get('nodes', [])]}")
        status, groups = pool.call("GET", "/v1/node-groups")
        c.check(groups.get("nodes") == 0, f"and the groups' counts: {groups.get('nodes')}")
        down = [e for e in pool.all_events() if e["type"] == "io.gpupool.node.down"]
        c.check(not down, f"a released node's silence is not a failure (no node.down): {[e['subject'] for e in down]}")
        left = pool.local_instances()
        c.check(not left, f"the provisioner holds no instance at the end: {list(left)}")
        # Usage: each job's GPU time at its node's offer price, and each node's billed time no job
        # used as idle; per offer the dollars are its GPU-hours at its price per GPU-hour.
        price_per_gpu_hour = {"cheapest-h100": 1.0, "h100x8": 2.0, "h100x4": 3.0}
        status, usage = pool.call("GET", "/v1/usage?by=offer,kind")
        rows = usage.get("rows", []) if status == 200 else []
        kinds = {(r["offer"], r["kind"]) for r in rows}
        bought = {e["data"]["offer"] for e in ready}
        c.check(all((o, "job") in kinds and (o, "idle") in kinds for o in bought),
                f"usage has job and idle time for every offer bought from ({sorted(bought)}): {sorted(kinds)}")
        per_offer = {}
        for r in rows:
            per_offer.setdefault(r["offer"], [0.0, 0.0])
            per_offer[r["offer"]][0] += r["gpu_hours"]
            per_offer[r["offer"]][1] += r["usd"]
        c.check(all(abs(usd - h * price_per_gpu_hour[o]) < 0.01 for o, (h, usd) in per_offer.items()),
                f"each offer's dollars are its GPU-hours at its price: {per_offer}")
        gang_gpu_hours = 16 * 1.0 / 3600
        job_hours = sum(r["gpu_hours"] for r in rows if r["kind"] == "job")
        c.check(job_hours >= gang_gpu_hours, f"the jobs' GPU time is counted ({job_hours:.4f} GPU-hours)")
        status, tenants = pool.call("GET", "/v1/usage?by=tenant&since=1h")
        names = {r["tenant"] for r in tenants.get("rows", [])} if status == 200 else set()
        c.check({"team-a", "team-b", ""} <= names, f"usage by tenant label (idle time has none): {names}")
        status, bad = pool.call("GET", "/v1/usage?by=colour")
        c.check(status == 400 and "colour" in bad.get("error", ""), f"an unknown column is refused, naming it: {status} {bad}")
        cli = subprocess.run([gpupool, "usage", "--by", "offer,kind", "--since", "1h", "--server", f"127.0.0.1:{pool.port}",
                              "--token", pool.token], capture_output=True, text=True)
        c.check(cli.returncode == 0 and "h100x8" in cli.stdout and "idle" in cli.stdout and "total" in cli.stdout,
                f"`gpupool usage` prints them: {cli.stdout}{cli.stderr}")
        status, metrics = pool.call("GET", "/metrics")
        count = [l for l in (metrics if isinstance(metrics, str) else "").splitlines() if l.startswith("gpupool_provision_seconds_count")]
        c.check(count and float(count[0].split()[-1]) == len(ready),
                f"/metrics: gpupool_provision_seconds counts each node's create to registration: {count} for {len(ready)} nodes")
        # Durable: a restarted server has the same records.
        before = pool.call("GET", "/v1/usage?by=offer,kind")[1]
        pool.stop_server()
        pool.start_server()
        after = pool.call("GET", "/v1/usage?by=offer,kind")[1]
        c.check(after == before, f"usage survives a restart: {before.get('total')} then {after.get('total')}")
    finally:
        pool.stop()
    return c.done()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
