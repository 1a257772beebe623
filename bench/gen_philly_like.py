#!/usr/bin/env python3
"""A synthetic trace in the philly.csv schema (timestamp,duration,num_gpus,gpu_time,cluster),
for scale benchmarks: N jobs, one every ~2 s (exponential gaps), 1 to 32 GPUs per job (powers
of two, weighted as Philly's: mostly small), durations log-uniform from 30 s to 3.5 days.
Deterministic for (N, seed)."""
import argparse
import datetime
import math
import random
import sys


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--mean-gap", type=float, default=2.0, help="seconds between arrivals, on average")
    ap.add_argument("-o", "--output", default="-")
    a = ap.parse_args()
    rng = random.Random(a.seed)
    out = sys.stdout if a.output == "-" else open(a.output, "w")
    out.write("timestamp,duration,num_gpus,gpu_time,cluster\n")
    t = datetime.datetime(2017, 10, 1, 0, 0, 0)
    sizes = [1, 2, 4, 8, 16, 32]
    weights = [60, 14, 10, 9, 4, 3]
    lo, hi = math.log(30), math.log(3.5 * 86400)
    secs = 0.0
    for _ in range(a.jobs):
        secs += rng.expovariate(1.0 / a.mean_gap)
        g = rng.choices(sizes, weights)[0]
        d = round(math.exp(rng.uniform(lo, hi)))
        ts = (t + datetime.timedelta(seconds=int(secs))).strftime("%Y-%m-%d %H:%M:%S")
        out.write(f"{ts},{d}.0,{g},{d * g}.0,synthetic\n")
    if out is not sys.stdout:
        out.close()


if __name__ == "__main__":
    main()
