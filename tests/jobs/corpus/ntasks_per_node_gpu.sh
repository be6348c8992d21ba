#!/bin/bash
# Two tasks on one GPU node, each with a CPU; the node's two GPUs shared through CUDA_VISIBLE_DEVICES.
#SBATCH --job-name=dual-task
#SBATCH --partition=gpu
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=2
#SBATCH --gres=gpu:2
#SBATCH --mem-per-cpu=2G
#SBATCH --time=00:45:00

srun --ntasks=2 bash -c 'CUDA_VISIBLE_DEVICES=$SLURM_LOCALID python worker.py'
