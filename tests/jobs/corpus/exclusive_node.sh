#!/bin/bash
# Benchmarks need the whole node to themselves: --exclusive.
#SBATCH --job-name=stream-bench
#SBATCH --partition=cpu
#SBATCH --nodes=1
#SBATCH --exclusive
#SBATCH --time=00:30:00

export OMP_NUM_THREADS=$(nproc)
./stream_c.exe
