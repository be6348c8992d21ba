#!/bin/bash
# A clean environment: nothing from the submitting shell, modules loaded in the script.
#SBATCH --job-name=clean-env
#SBATCH --partition=cpu
#SBATCH --export=NONE
#SBATCH --time=00:30:00

module purge
module load python/3.11
python -c 'import os; print(sorted(os.environ))'
