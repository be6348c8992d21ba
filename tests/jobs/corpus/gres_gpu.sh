#!/bin/bash
# The classic GRES form, two GPUs per node.
#SBATCH --job-name=alphafold
#SBATCH --partition=gpu
#SBATCH --gres=gpu:2
#SBATCH --cpus-per-task=2
#SBATCH --mem=20G
#SBATCH --time=08:00:00

run_alphafold.sh -f target.fasta -o predictions/ -t 2023-01-01
