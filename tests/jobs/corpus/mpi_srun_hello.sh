#!/bin/bash
# The first MPI job everyone writes: two ranks started by srun, memory per CPU.
#SBATCH --job-name=mpi-hello
#SBATCH --partition=cpu
#SBATCH --ntasks=2
#SBATCH --mem-per-cpu=1G
#SBATCH --time=00:10:00

module load openmpi/4.1
srun --mpi=pmix ./hello_mpi
