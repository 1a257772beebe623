"""Job arrays as Slurm users know them, on a real pool (a server and two real agents). An
array of 1,000 elements runs a Slurm array script unchanged: it reads SLURM_ARRAY_TASK_ID (and
GPUPOOL_ARRAY_INDEX, SLURM_ARRAY_TASK_COUNT); every index must run exactly once, each element's
output naming its own index. The array is one record and one line in `GET /v1/jobs`, with its
counts by state; `expand=1` and `array=ID` list the elements; `ID_INDEX` addresses one
everywhere (show, logs, cancel). `%N` bounds the elements running at once. Cancelling one
element that has not been expanded yet, then the whole array, leaves nothing running. A bad
array spec is refused naming the field."""
import sys
import time

from pool import Checks, Pool

SCRIPT = 'echo "index=$SLURM_ARRAY_TASK_ID gp=$GPUPOOL_ARRAY_INDEX count=$SLURM_ARRAY_TASK_COUNT job=$SLURM_ARRAY_JOB_ID"'


def wait_state(pool, job, states, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        status, j = pool.call("GET", f"/v1/jobs/{job}")
        if status == 200 and j["state"] in states:
            return j
        time.sleep(0.2)
    return pool.call("GET", f"/v1/jobs/{job}")[1]


def main(gpupool):
    c = Checks()
    pool = Pool(gpupool)
    try:
        pool.start_server()
        for i in (1, 2):
            pool.start_agent(f"node-{i}", "4xH100", interval="100ms")
        pool.wait_nodes(2)

        status, body = pool.call("POST", "/v1/jobs", {"command": ["true"], "array": "5-2"})
        c.check(status == 400 and "array" in body.get("error", ""), f"a bad array spec is refused naming the field: {status} {body}")

        # 1,000 elements, CPU only, at most 64 at once: the script as a Slurm user wrote it.
        arr = pool.submit(["sh", "-c", SCRIPT], gpus=0, array="0-999%64", name="slurm-script")
        status, listing = pool.call("GET", "/v1/jobs?limit=100")
        c.check(status == 200 and [j["id"] for j in listing["jobs"]].count(arr) == 1 and
                not any(j.get("array_job") for j in listing["jobs"]), "the array is one line in the listing")
        peak = 0
        deadline = time.time() + 240
        while time.time() < deadline:
            status, a = pool.call("GET", f"/v1/jobs/{arr}")
            counts = a["array_counts"]
            peak = max(peak, counts["starting"] + counts["running"])
            if a["state"] in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(0.2)
        c.check(a["state"] == "succeeded" and a["array_counts"]["succeeded"] == 1000,
                f"every element succeeded: {a['state']} {a['array_counts']}")
        c.check(0 < peak <= 64, f"%64 bounds the elements live at once (peak {peak})")

        elements = pool.all_jobs(f"&array={arr}")
        c.check(len(elements) == 1000 and len({e["id"] for e in elements}) == 1000, f"array={arr} lists 1000 elements ({len(elements)})")
        seen = {}
        bad = []
        for e in elements:
            idx = e["array_index"]
            status, out = pool.call("GET", f"/v1/jobs/{arr}_{idx}/logs")
            want = f"index={idx} gp={idx} count=1000 job={arr}"
            if status != 200 or out.strip() != want:
                bad.append((idx, status, out))
            seen[idx] = seen.get(idx, 0) + 1
        c.check(not bad, f"each element's script saw its own SLURM_ARRAY_TASK_ID: {bad[:3]}")
        c.check(sorted(seen) == list(range(1000)) and set(seen.values()) == {1}, "every index 0..999 ran exactly once")
        status, one = pool.call("GET", f"/v1/jobs/{arr}_123")
        c.check(status == 200 and one["array_index"] == 123 and one["array_job"] == arr, "ID_INDEX addresses one element")
        expanded = pool.call("GET", "/v1/jobs?expand=1&limit=5")[1]["jobs"]
        c.check(all(j.get("array_job") == arr for j in expanded), "expand=1 lists elements one by one")

        # Cancel: one element not yet expanded, then the whole array (%2 of 100 sleeping ones).
        arr2 = pool.submit(["sleep", "60"], gpus=1, array="0-99%2", name="to-cancel")
        wait_state(pool, arr2, ("running",), 30)
        status, el = pool.call("POST", f"/v1/jobs/{arr2}_50/cancel")
        c.check(status == 200 and el["state"] == "cancelled", f"an element not yet expanded is cancelled: {status} {el}")
        status, a2 = pool.call("GET", f"/v1/jobs/{arr2}")
        c.check(a2["array_counts"]["cancelled"] == 1 and a2["state"] == "running", f"the array counts it: {a2['array_counts']}")
        status, _ = pool.call("POST", f"/v1/jobs/{arr2}/cancel")
        a2 = wait_state(pool, arr2, ("cancelled",), 30)
        c.check(a2["state"] == "cancelled" and a2["array_counts"]["cancelled"] == 100 and
                a2["array_counts"]["running"] == 0, f"the whole array is cancelled: {a2['state']} {a2['array_counts']}")
        status, nothing = pool.call("GET", "/v1/jobs?state=running&expand=1")
        c.check(status == 200 and not nothing["jobs"], "nothing runs after the array is cancelled")
    finally:
        pool.stop()
    return c.done()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
