"""The live pool at fleet scale, a thousand nodes on this machine: a real server and `gpupool
hollow --nodes 1000` (the real agent protocol over 1,000 real connections). The same run as
`make bench-scale` (bench/scale.py), smaller, with its outcomes checked rather than its speed:

  1. 10,000 one-GPU jobs submitted as arrays: every one is placed and started on a hollow node,
     and the listing answers throughout, with the server's heartbeat queue kept small (32) so
     that heartbeats are held at their headers (back-pressure) during the storm;
  2. one node's heartbeats stop: its jobs run elsewhere within 5 s (detection and the lease);
  3. kill -9 of the server with everything in its store: it serves again, every job is there,
     every running element is adopted, and no task attempt was started twice (the hollow
     agents' own record of what they started).
The figures are printed (docs/benchmarks.md has the 10,000-node ones)."""
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench"))
from scale import Scale  # noqa: E402

from pool import Checks  # noqa: E402


def main(gpupool):
    c = Checks()
    # A small heartbeat queue, so that the storm's heartbeats are held at their headers
    # (back-pressure) and everything below must hold with the held path in use.
    s = Scale(gpupool, nodes=1000, jobs=10000, arrays=10, duration=30, server_args=["--max-queued-heartbeats", "32"])
    try:
        s.start_server()
        s.start_hollow()
        s.wait_registered(timeout=120)
        c.check(s.hollow_counts()["registered"] == 1000, "1,000 hollow nodes registered")
        c.check(s.storm(), f"every job started on a hollow node: {s.out['storm']['started']} of 10000")
        st = s.out["storm"]
        held = s.metric("gpupool_heartbeats_held_total")
        c.check(held > 0, f"heartbeats were held at their headers under the storm ({held:.0f})")
        c.check(st["list_limit100_ms"]["samples"] > 10, f"the listing answered during the storm ({st['list_limit100_ms']})")
        c.check(s.move_one_node(), f"a silent node's jobs run elsewhere: {s.out['move']}")
        mv = s.out["move"]
        c.check(mv["running_elsewhere_seconds"] is not None and mv["running_elsewhere_seconds"] < 5,
                f"within 5 s of its last heartbeat ({mv['running_elsewhere_seconds']} s)")
        ok = s.restart()
        r = s.out["restart"]
        c.check(ok, f"after kill -9 the server serves again with every job: {r}")
        c.check(r["running_after"] >= r["running_before"] > 0, f"every running element adopted: {r}")
        c.check(r["hollow_repeats"] == 0, "no launch of an attempt the nodes had already started")
        c.check(s.started_twice() == 0, f"no task attempt started twice: {s.out['started_twice']}")
        print(json.dumps({k: v for k, v in s.out.items() if k != "storm"} | {"storm": {k: v for k, v in st.items() if k != "arrays"}}))
    finally:
        s.stop()
        shutil.rmtree(s.dir, ignore_errors=True)
    return c.done()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
