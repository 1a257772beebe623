"""A spot interruption with notice, on a real server with the `local` provisioner: the pool
starts with no node; a job that saves its progress on SIGTERM in GPUPOOL_CHECKPOINT_DIR runs
on the cheapest node, a spot instance. The provider announces (its `events` verb) that it takes
the instance back in a few seconds; the server blocks the spot offer, gives the job SIGTERM
with the notice as its grace, and buys a replacement from the next feasible offer, on-demand.
The job resumes there from its checkpoint and succeeds; the spot instance is deleted; the
event log shows each step."""
import json
import os
import sys
import time

from pool import Checks, Pool

FLEET = """
[[provider]]
name = "lab"
kind = "cloud"
provisioner = "local"
local = {{ seed = 3, boot_delay = "300ms", boot_delay_max = "600ms", spot_lifetime = "7s", notice = "4s" }}

[[site]]
name = "here"

[[offer]]
name = "spot"
provider = "lab"
site = "here"
gpu_model = "H100"
gpus = 2
tier = "spot"
price = 2.00
boot_time = "5s"
min_billed = "5s"

[[offer]]
name = "on-demand"
provider = "lab"
site = "here"
gpu_model = "H100"
gpus = 2
price = 6.00
boot_time = "5s"
min_billed = "5s"
"""

# Counts to 150 (0.1 s a step) from what its checkpoint holds; on SIGTERM saves the count.
JOB = ('D="$GPUPOOL_CHECKPOINT_DIR"; mkdir -p "$D"; n=$(cat "$D/progress" 2>/dev/null || echo 0); '
       'echo "$GPUPOOL_ATTEMPT $n $GPUPOOL_NODE" >> {out}/starts; '
       "trap 'echo $n > \"$D/progress\"; exit 0' TERM; "
       'while [ $n -lt 150 ]; do n=$((n+1)); sleep 0.1; done; echo $n > {out}/done')


def main(gpupool):
    c = Checks()
    pool = Pool(gpupool)
    try:
        os.makedirs(pool.dir, exist_ok=True)
        out = pool.shared_dir(f"{pool.dir}/out")
        with open(f"{pool.dir}/fleet.toml", "w") as f:
            f.write(FLEET.format())
        pool.start_server("--fleet", f"{pool.dir}/fleet.toml", "--scale-down-idle", "2s")
        jid = pool.submit(["sh", "-c", JOB.format(out=out)], gpus=2, name="resumable")
        try:
            final = pool.wait_jobs([jid], timeout=90)[jid]
        except RuntimeError:
            for e in pool.all_events():
                print("event", e["type"], json.dumps(e["data"])[:200])
            raise
        starts = [line.split() for line in open(f"{out}/starts")]
        c.check(final["state"] == "succeeded", f"the job succeeded ({final['state']}: {final.get('message')})")
        c.check(final["failures"] == 0, f"an interruption is not a failure ({final['failures']})")
        c.check(len(starts) == 2 and starts[0][0] == "1" and starts[1][0] == "2",
                f"it ran twice: before the interruption and after ({starts})")
        c.check(len(starts) == 2 and int(starts[1][1]) > 0, f"attempt 2 resumed from the checkpoint, not from 0 ({starts})")
        c.check(os.path.exists(f"{out}/done") and open(f"{out}/done").read().strip() == "150", "and counted to the end")

        # Released once idle, so that the end state is nothing held.
        deadline = time.time() + 40
        while time.time() < deadline:
            events = pool.all_events()
            types = [e["type"] for e in events]
            if types.count("io.gpupool.node.released") >= 2:
                break
            time.sleep(0.5)
        by = lambda t: [e["data"] for e in events if e["type"] == "io.gpupool.node." + t]
        ready = by("ready")
        c.check([r["offer"] for r in ready] == ["spot", "on-demand"],
                f"the job's first node was spot, its replacement on-demand: {[r['offer'] for r in ready]}")
        interrupted = by("interrupted")
        c.check(len(interrupted) == 1 and interrupted[0]["offer"] == "spot" and 0 < interrupted[0]["notice_s"] <= 4.5
                and interrupted[0]["node"] == starts[0][2],
                f"the interruption is an event naming the node, its offer and the notice: {interrupted}")
        placed = [e for e in events if e["type"] == "io.gpupool.job.placed"]
        c.check(len(placed) == 2 and placed[1]["data"].get("nodes", [None])[0] == starts[1][2] if placed else False,
                f"attempt 2 was placed on the replacement: {[p['data'].get('nodes') for p in placed]}")
        seqs = {t: min((e["sequence"] for e in events if e["type"] == "io.gpupool.node." + t), default=None)
                for t in ("interrupted", "provisioning")}
        prov = [e for e in events if e["type"] == "io.gpupool.node.provisioning"]
        c.check(len(prov) == 2 and prov[1]["data"]["offer"] == "on-demand" and prov[1]["sequence"] > seqs["interrupted"],
                f"the replacement was bought after the notice, from on-demand: {[p['data']['offer'] for p in prov]}")
        status, offers = pool.call("GET", "/v1/offers")
        blocked = {b["what"]: b for b in offers.get("blocked", [])}
        c.check("spot" in blocked, f"the spot offer is blocked for a while: {offers.get('blocked')}")
        released = by("released")
        c.check(len(released) >= 2, f"both nodes were given back (the spot one at its deadline): {released}")
        left = pool.local_instances()
        c.check(not left, f"the provisioner holds no instance at the end: {list(left)}")
    finally:
        pool.stop()
    return c.done()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
