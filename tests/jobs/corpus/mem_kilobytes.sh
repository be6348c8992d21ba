#!/bin/bash
# Memory in kilobytes, as an old submit template wrote it.
#SBATCH --job-name=legacy-kb
#SBATCH --partition=cpu
#SBATCH --mem=2097152K
#SBATCH --time=00:30:00

./legacy_solver input.dat
