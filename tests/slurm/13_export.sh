#!/bin/sh
#SBATCH --job-name=export
#SBATCH --export=NONE,MODE=fast
#SBATCH --output=export-%j.out
echo "MODE=$MODE FROM_SUBMITTER=${FROM_SUBMITTER:-unset}"
