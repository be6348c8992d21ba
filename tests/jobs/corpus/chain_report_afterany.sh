#!/bin/bash
# Collects results whatever happened to the run before it (the job id is rewritten by the corpus test).
#SBATCH --job-name=collect-results
#SBATCH --partition=debug
#SBATCH --dependency=afterany:481516
#SBATCH --time=00:05:00
#SBATCH --mem=1G

python collect.py runs/ > summary.csv
