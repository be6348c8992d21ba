#!/bin/bash
# The whole submitting environment plus two settings for this run.
#SBATCH --job-name=wandb-offline
#SBATCH --partition=gpu
#SBATCH --gpus=1
#SBATCH --time=02:00:00
#SBATCH --export=ALL,WANDB_MODE=offline,HF_HUB_OFFLINE=1

python train.py --report-to wandb
