#!/bin/bash
# Before and after in one run: the benchmark binaries of two builds, then `gpupool sim` of both
# on the 100,000-job trace and philly.csv, every policy. Usage:
#   bench/before_after.sh OLD_BUILD_DIR NEW_BUILD_DIR [TRACES]
# (each build dir holds gpupool and bench/gpupool_bench). Run it on a quiet machine.
set -e
OLD=$1; NEW=$2; TRACES=${3:-${GPUPOOL_TRACES:-../shared/traces}}
export GPUPOOL_TRACES=$TRACES
F='BM_Pass|BM_SingleArrival|BM_KeptPass|BM_Sim'
echo "== before"; "$OLD/bench/gpupool_bench" --benchmark_filter="$F" 2>&1 | grep -E "^BM_"
echo "== after"; "$NEW/bench/gpupool_bench" --benchmark_filter="$F" 2>&1 | grep -E "^BM_"
echo "== after: exactness"; "$NEW/bench/gpupool_bench" --benchmark_filter=BM_CandidateLimitGap 2>&1 | grep -E "^BM_"
big=$(mktemp -d)/philly-like-100k.csv
python3 "$(dirname "$0")/gen_philly_like.py" --jobs 100000 -o "$big"
policies=$("$NEW/gpupool" policies | awk 'NR > 1 && /^  / {print $1} /^queue orders/ {exit}')
echo "| trace | fleet | policy | before (s) | after (s, best of 3) |"
for ft in "10000x8xH100 $big" "64x8xV100 $TRACES/pollux-philly/philly.csv" "256x8xV100 $TRACES/pollux-philly/philly.csv"; do
  set -- $ft
  for p in $policies; do
    t0=$(date +%s.%N); "$OLD/gpupool" sim --fleet "$1" --trace "$2" --policy "$p" --format json > /dev/null; t1=$(date +%s.%N)
    best=999
    for r in 1 2 3; do
      a=$(date +%s.%N); "$NEW/gpupool" sim --fleet "$1" --trace "$2" --policy "$p" --format json > /dev/null; b=$(date +%s.%N)
      best=$(python3 -c "print(min($best, $b - $a))")
    done
    python3 -c "print('| $(basename "$2") | $1 | $p | %.2f | %.2f |' % ($t1 - $t0, $best))"
  done
done
