#!/bin/bash
# No inherited environment except the thread counts the solver needs.
#SBATCH --job-name=threaded-solver
#SBATCH --partition=cpu
#SBATCH --cpus-per-task=2
#SBATCH --time=01:00:00
#SBATCH --export=NONE,OMP_NUM_THREADS=2,MKL_NUM_THREADS=2

./solver --threads 2
