#!/bin/bash
#SBATCH -J multi
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=1
#SBATCH --mem=1G
env | grep '^SLURM_' | sort > "$OUT/multi.env"
echo "gpus=$CUDA_VISIBLE_DEVICES"
