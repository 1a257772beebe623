#!/bin/bash
#SBATCH --job-name=mail
#SBATCH --mail-type=END
#SBATCH --gres=gpu:1
echo never
