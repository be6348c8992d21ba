#!/bin/bash
# Hyper-parameter sweep: 100 array tasks, at most 10 running at once, one log per task.
#SBATCH --job-name=lr-sweep
#SBATCH --partition=cpu
#SBATCH --array=0-99%10
#SBATCH --cpus-per-task=1
#SBATCH --mem=2G
#SBATCH --time=00:45:00
#SBATCH --output=logs/%x_%A_%a.out
#SBATCH --error=logs/%x_%A_%a.err

lrs=($(python -c 'import numpy as np; print(*np.logspace(-5, -1, 100))'))
python train_small.py --lr "${lrs[$SLURM_ARRAY_TASK_ID]}" --seed 0
