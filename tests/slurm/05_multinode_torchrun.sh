#!/bin/bash
#SBATCH --job-name=ddp
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=2
#SBATCH --time=10
#SBATCH --output=ddp-%j.out
# The usual multi-node PyTorch recipe: one torchrun per node, rendezvous at the first node.
nodes=( $(scontrol show hostnames "$SLURM_JOB_NODELIST") )
head_node=${nodes[0]}
srun torchrun --nnodes "$SLURM_NNODES" --nproc_per_node 2 --rdzv_id "$SLURM_JOB_ID" \
  --rdzv_endpoint "$head_node:29500" train.py --epochs 1
