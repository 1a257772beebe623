#!/bin/bash
#SBATCH --job-name=single
#SBATCH --gres=gpu:1
#SBATCH --time=00:10:00
#SBATCH --output=%x-%j.out

# One GPU, one task: the most common script there is.
env | grep '^SLURM_' | sort > "$OUT/single.env"
echo "on $(hostname) with GPUs $CUDA_VISIBLE_DEVICES"
