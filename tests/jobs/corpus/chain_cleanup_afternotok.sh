#!/bin/bash
# Cleans up scratch only if the main run failed (short option -d; the job id is rewritten by the test).
#SBATCH -J scratch-cleanup
#SBATCH -p debug
#SBATCH -d afternotok:481516
#SBATCH -t 10

rm -rf "$HOME/scratch/failed-run"
