#!/bin/sh
#SBATCH --job-name=chdir
#SBATCH --chdir=work-here
#SBATCH --output=chdir-%j.out
echo "pwd=$(pwd) submit=$SLURM_SUBMIT_DIR"
