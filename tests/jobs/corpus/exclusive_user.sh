#!/bin/bash
# Share nodes only with my own jobs (--exclusive=user), for a pipeline of many small steps.
#SBATCH --job-name=pipeline-steps
#SBATCH --partition=cpu
#SBATCH --exclusive=user
#SBATCH --ntasks=1
#SBATCH --mem=6G
#SBATCH --time=01:30:00

snakemake --cores 1 --rerun-incomplete
