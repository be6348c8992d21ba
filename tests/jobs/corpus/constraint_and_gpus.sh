#!/bin/bash
# Eight A100s over two InfiniBand nodes, GPUs counted for the whole job (short forms -C and -G).
#SBATCH -J nerf-large
#SBATCH -p wide
#SBATCH -N 2
#SBATCH -C "a100&ib"
#SBATCH -G a100:8
#SBATCH --ntasks-per-node=4
#SBATCH -c 8
#SBATCH --mem=300G
#SBATCH -t 16:00:00

srun python train_nerf.py --scene garden --gpus-per-node 4
