#!/bin/sh
#SBATCH --job-name=train-after
#SBATCH --gres=gpu:1
#SBATCH --output=train-after-%j.out
# Submitted with --dependency=afterok:PREPARE on the command line.
cat "$OUT/prepared"
