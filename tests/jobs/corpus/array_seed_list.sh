#!/bin/bash
# Re-running only the seeds that failed last time: an explicit index list.
#SBATCH -J seeds-rerun
#SBATCH -p cpu
#SBATCH -a 1,3,7,15,31
#SBATCH -t 1:00:00
#SBATCH --mem-per-cpu=3G
#SBATCH -o logs/seed-%a.log

python evaluate.py --seed $SLURM_ARRAY_TASK_ID --out results/seed_$SLURM_ARRAY_TASK_ID.json
