#!/bin/bash
#SBATCH --job-name=whole
#SBATCH --nodes=1
#SBATCH --exclusive
#SBATCH --output=whole-%j.out
echo "SLURM_GPUS_ON_NODE=$SLURM_GPUS_ON_NODE"
