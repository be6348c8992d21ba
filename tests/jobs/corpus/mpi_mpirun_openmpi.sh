#!/bin/bash
# Open MPI's mpirun across 4 InfiniBand nodes, 32 ranks per node (WRF-style weather run).
#SBATCH --job-name=wrf-conus
#SBATCH --partition=wide
#SBATCH --nodes=4
#SBATCH --ntasks-per-node=32
#SBATCH --cpus-per-task=1
#SBATCH --mem-per-cpu=3900M
#SBATCH --constraint=ib
#SBATCH --time=08:00:00
#SBATCH --output=wrf.%j.out

module purge
module load gcc/12 openmpi/4.1 netcdf-fortran
ulimit -s unlimited
mpirun -np $SLURM_NTASKS --bind-to core ./wrf.exe
