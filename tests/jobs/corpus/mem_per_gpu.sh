#!/bin/bash
# Memory asked per GPU on a 4-GPU node, so it scales when someone changes the GPU count.
#SBATCH --job-name=diffusion-ft
#SBATCH --partition=wide
#SBATCH --nodes=1
#SBATCH --gpus-per-node=4
#SBATCH --mem-per-gpu=120G
#SBATCH --cpus-per-gpu=6
#SBATCH --time=1-00:00:00

accelerate launch --num_processes 4 train_text_to_image.py --mixed_precision bf16
