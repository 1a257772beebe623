#!/bin/bash
#SBATCH --job-name=team
#SBATCH --partition=h100
#SBATCH --account=team-a
#SBATCH --qos=high
#SBATCH --gres=gpu:1
#SBATCH --output=team-%j.out
echo "partition=$SLURM_JOB_PARTITION account=$SLURM_JOB_ACCOUNT qos=$SLURM_JOB_QOS on $SLURMD_NODENAME"
