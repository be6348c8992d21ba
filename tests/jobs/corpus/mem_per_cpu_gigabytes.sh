#!/bin/bash
# Two tasks with 4 GB per CPU (Gaussian-style quantum chemistry).
#SBATCH --job-name=dft-opt
#SBATCH --partition=cpu
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=2
#SBATCH --mem-per-cpu=4G
#SBATCH --time=12:00:00

export GAUSS_SCRDIR=$TMPDIR
g16 < opt_freq.com > opt_freq.log
