#!/bin/bash
#SBATCH --job-name=tasks
#SBATCH --ntasks=2
#SBATCH --gpus-per-task=1
#SBATCH -o tasks-%j.out
# Two tasks on one node, a GPU each.
srun bash -c 'echo "proc=$SLURM_PROCID local=$SLURM_LOCALID ntasks=$SLURM_NTASKS gpu=$CUDA_VISIBLE_DEVICES" > "$OUT/tasks.$SLURM_PROCID"'
