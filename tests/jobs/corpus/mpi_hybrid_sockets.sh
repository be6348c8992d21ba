#!/bin/bash
# Hybrid MPI + OpenMP (LAMMPS): 8 ranks per socket, 2 threads each, on two nodes; avoids the last node.
#SBATCH --job-name=lammps-hybrid
#SBATCH --partition=wide
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=16
#SBATCH --ntasks-per-socket=8
#SBATCH --cpus-per-task=2
#SBATCH --mem-per-cpu=2G
#SBATCH --exclude=wide4
#SBATCH --time=06:00:00

export OMP_NUM_THREADS=$SLURM_CPUS_PER_TASK
export OMP_PLACES=cores
srun --cpu-bind=cores lmp -sf omp -pk omp $OMP_NUM_THREADS -in in.rhodo
