#!/bin/bash
# Runs in a sub-folder of the project (--chdir relative to where it is submitted); logs land there.
#SBATCH --job-name=in-runs-dir
#SBATCH --partition=debug
#SBATCH --chdir=runs
#SBATCH --output=%x-%j.out
#SBATCH --time=00:10:00

python ../analyze.py --input ../data
