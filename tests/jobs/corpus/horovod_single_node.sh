#!/bin/bash
# Horovod on one node: two ranks, one GPU each, memory asked per GPU.
#SBATCH --job-name=hvd-mnist
#SBATCH --partition=gpu
#SBATCH --ntasks=2
#SBATCH --gpus-per-task=1
#SBATCH --cpus-per-task=1
#SBATCH --mem-per-gpu=8G
#SBATCH --time=01:00:00

horovodrun -np $SLURM_NTASKS -H localhost:$SLURM_NTASKS python keras_mnist.py
