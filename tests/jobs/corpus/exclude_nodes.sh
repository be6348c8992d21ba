#!/bin/bash
# Keeps away from two nodes that gave NaNs last week (-x, a node range).
#SBATCH -J avoid-flaky
#SBATCH -p wide
#SBATCH -N 2
#SBATCH -x wide[3-4]
#SBATCH -n 8
#SBATCH -t 4:00:00

srun python -m pytest tests/numerics -x
