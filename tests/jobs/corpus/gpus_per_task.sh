#!/bin/bash
# One GPU per task, two tasks, each with its own CPU (an ensemble of independent models).
#SBATCH --job-name=ensemble
#SBATCH --partition=gpu
#SBATCH --ntasks=2
#SBATCH --gpus-per-task=1
#SBATCH --cpus-per-task=1
#SBATCH --mem=8G
#SBATCH --time=01:00:00

srun --exact python train_member.py --member $SLURM_PROCID
