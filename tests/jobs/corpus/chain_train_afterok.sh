#!/bin/bash
# Step 2 of a pipeline: train once preprocessing succeeded. The job id in --dependency is the one
# `sbatch preprocess.sh` printed; the corpus test rewrites it to a job it queued just before.
#SBATCH --job-name=train-after-prep
#SBATCH --partition=gpu
#SBATCH --dependency=afterok:481516
#SBATCH --gpus=1
#SBATCH --cpus-per-task=2
#SBATCH --time=06:00:00

python train.py --data data/processed
