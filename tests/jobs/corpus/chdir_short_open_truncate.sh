#!/bin/bash
# Short -D for the working directory, separate -e file, and output files truncated on each run.
#SBATCH -J post-process
#SBATCH -p cpu
#SBATCH -D runs
#SBATCH -o post-%j.out
#SBATCH -e post-%j.err
#SBATCH --open-mode=truncate
#SBATCH -t 1:00:00

./postprocess.sh
