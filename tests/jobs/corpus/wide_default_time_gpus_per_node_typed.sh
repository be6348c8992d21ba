#!/bin/bash
# Typed GPUs per node (--gpus-per-node=a100:4) on two nodes, and the partition's default time limit.
#SBATCH --job-name=eval-harness
#SBATCH --partition=wide
#SBATCH --nodes=2
#SBATCH --gpus-per-node=a100:4
#SBATCH --ntasks-per-node=4
#SBATCH --cpus-per-task=4

srun lm_eval --model hf --model_args pretrained=checkpoints/final --tasks mmlu,hellaswag
