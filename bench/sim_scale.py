#!/usr/bin/env python3
"""Simulation at scale, as a user runs it: `gpupool sim` wall time (best of N runs) for every
policy `gpupool policies` lists, on a 100,000-job trace in the philly.csv schema
(gen_philly_like.py) on --fleet 10000x8xH100, and on the full philly.csv on 64x8xV100 and
256x8xV100. Prints a Markdown table for docs/benchmarks.md.

    python3 bench/sim_scale.py build/gpupool [--runs 3] [--traces ../shared/traces]"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import time


def policies(gpupool):
    out = subprocess.run([gpupool, "policies"], capture_output=True, text=True, check=True).stdout
    names = []
    for line in out.splitlines()[1:]:
        if not line.startswith("  "):
            break
        names.append(line.split()[0])
    return names


def best_of(cmd, runs):
    best = None
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        dt = time.perf_counter() - t0
        best = dt if best is None else min(best, dt)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("gpupool")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--traces", default=os.environ.get("GPUPOOL_TRACES", "../shared/traces"))
    a = ap.parse_args()
    here = os.path.dirname(os.path.abspath(__file__))
    big = os.path.join(tempfile.mkdtemp(prefix="gpupool-scale-"), "philly-like-100k.csv")
    subprocess.run([sys.executable, os.path.join(here, "gen_philly_like.py"), "--jobs", "100000", "-o", big], check=True)
    philly = os.path.join(a.traces, "pollux-philly", "philly.csv")
    cases = [("100,000 jobs (philly-like)", big, "10000x8xH100"), ("philly.csv", philly, "64x8xV100"),
             ("philly.csv", philly, "256x8xV100")]
    print("| trace | fleet | policy | seconds (best of %d) |" % a.runs)
    print("|---|---|---|---|")
    for label, trace, fleet in cases:
        for p in policies(a.gpupool):
            secs = best_of([a.gpupool, "sim", "--fleet", fleet, "--trace", trace, "--policy", p, "--format", "json"], a.runs)
            print(f"| {label} | `{fleet}` | {p} | {secs:.2f} |", flush=True)


if __name__ == "__main__":
    main()
