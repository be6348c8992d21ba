#!/bin/bash
# Must finish before the paper deadline; happy with as little as two hours (backfill-friendly).
#SBATCH --job-name=camera-ready
#SBATCH --partition=cpu
#SBATCH --time=12:00:00
#SBATCH --time-min=02:00:00
#SBATCH --deadline=now+3days
#SBATCH --mem=3G

python make_figures.py --all
