#!/bin/bash
# A two-core R job whose copied template says the memory twice: a bare number (megabytes), then with M
# (the later line wins).
#SBATCH --job-name=r-glmm
#SBATCH --partition=cpu
#SBATCH --cpus-per-task=2
#SBATCH --mem=12000
#SBATCH --mem=12000M
#SBATCH --time=05:00:00

module load R/4.3
Rscript fit_glmm.R
