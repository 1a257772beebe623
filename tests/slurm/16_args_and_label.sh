#!/bin/bash
#SBATCH --job-name=args
#SBATCH --ntasks=2
#SBATCH --output=args-%j.out
# The script's own arguments, and srun --label.
echo "args: $*"
srun --label bash -c 'echo hello'
