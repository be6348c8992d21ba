#!/bin/bash
# Horovod with TensorFlow on 2 nodes: one rank per GPU, CPUs asked per GPU.
#SBATCH --job-name=hvd-resnet
#SBATCH --partition=wide
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=4
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-gpu=8
#SBATCH --mem=256G
#SBATCH --time=10:00:00
#SBATCH --output=logs/hvd-%j.out

module load tensorflow/2.13 horovod/0.28
srun python tf2_resnet50.py --batch-size 256 --epochs 90
