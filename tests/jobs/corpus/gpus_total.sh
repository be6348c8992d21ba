#!/bin/bash
# Two GPUs for the job, counted with --gpus.
#SBATCH --job-name=jax-md
#SBATCH --partition=gpu
#SBATCH --gpus=2
#SBATCH --cpus-per-task=2
#SBATCH --time=03:00:00

python run_md.py --devices 2
