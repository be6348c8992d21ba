#!/bin/bash
# CPU code built for AVX2 or AVX-512: either feature will do (a quoted OR constraint).
#SBATCH --job-name=gromacs-md
#SBATCH --partition=wide
#SBATCH --constraint="avx2|avx512"
#SBATCH --ntasks=2
#SBATCH --cpus-per-task=1
#SBATCH --mem-per-cpu=2000M
#SBATCH --time=03:00:00

gmx mdrun -deffnm md_0_1 -ntomp $SLURM_CPUS_PER_TASK
