#!/bin/bash
#SBATCH --job-name=mn
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=2
#SBATCH --gres=gpu:2
#SBATCH --output=mn-%j.out
echo "batch script on $SLURMD_NODENAME"
srun bash -c 'env | grep ^SLURM | sort > "$OUT/mn.$SLURM_PROCID"; echo "step $SLURM_PROCID on $SLURMD_NODENAME"'
