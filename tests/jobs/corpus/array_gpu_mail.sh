#!/bin/bash
# A GPU sweep over 20 configs, 2 at a time, with a mail for every task that fails.
#SBATCH --job-name=vit-ablation
#SBATCH --partition=gpu
#SBATCH --array=0-19%2
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=1
#SBATCH --mem=8G
#SBATCH --time=02:00:00
#SBATCH --mail-type=FAIL,ARRAY_TASKS
#SBATCH --mail-user=grace.hopper@example.org
#SBATCH --output=logs/%x/%A_%a.out

config=$(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" configs/ablation.txt)
python train_vit.py $config
