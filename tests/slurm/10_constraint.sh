#!/bin/bash
#SBATCH --job-name=needs-a100
#SBATCH --constraint=A100
#SBATCH --gpus=1
#SBATCH --output=constraint-%j.out
echo "node=$SLURMD_NODENAME"
