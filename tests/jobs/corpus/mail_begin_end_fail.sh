#!/bin/bash
# Tell me when it starts, ends or fails.
#SBATCH --job-name=cryo-em-refine
#SBATCH --partition=cpu
#SBATCH --ntasks=2
#SBATCH --time=1-00:00:00
#SBATCH --mail-type=BEGIN,END,FAIL
#SBATCH --mail-user=rosalind.franklin@example.org

srun relion_refine_mpi --o Refine3D/job042/run --auto_refine --split_random_halves
