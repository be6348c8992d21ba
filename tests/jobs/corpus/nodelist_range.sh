#!/bin/bash
# Two named nodes of the wide partition, as a node range (--nodelist).
#SBATCH --job-name=nccl-tests
#SBATCH --partition=wide
#SBATCH --nodes=2
#SBATCH --nodelist=wide[1-2]
#SBATCH --ntasks-per-node=4
#SBATCH --gpus-per-node=4
#SBATCH --time=00:30:00

srun ./build/all_reduce_perf -b 8 -e 4G -f 2 -g 1
