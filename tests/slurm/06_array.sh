#!/bin/bash
#SBATCH --job-name=sweep
#SBATCH --array=0-3%2
#SBATCH --gres=gpu:1
#SBATCH --output=sweep-%A_%a.out
lrs=(0.1 0.01 0.001 0.0001)
echo "task $SLURM_ARRAY_TASK_ID of $SLURM_ARRAY_JOB_ID lr=${lrs[$SLURM_ARRAY_TASK_ID]}"
