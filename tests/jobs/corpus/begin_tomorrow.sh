#!/bin/bash
# Held until midnight so the daytime queue stays free.
#SBATCH --job-name=overnight-render
#SBATCH --partition=cpu
#SBATCH --begin=tomorrow
#SBATCH --time=06:00:00
#SBATCH --cpus-per-task=2

./render_all.sh
