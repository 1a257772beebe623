#!/bin/sh
#SBATCH --job-name=prepare
#SBATCH --output=prepare-%j.out
echo prepared > "$OUT/prepared"
