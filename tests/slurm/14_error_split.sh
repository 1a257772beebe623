#!/bin/sh
#SBATCH --job-name=split
#SBATCH -o split-%j.log
#SBATCH -e split-%j.err
echo to-stdout
echo to-stderr >&2
