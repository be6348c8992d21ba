#!/bin/bash
# Every mail, plus a warning at 80 % of the time limit.
#SBATCH --job-name=climate-downscale
#SBATCH --partition=cpu
#SBATCH --time=10:00:00
#SBATCH --mail-type=ALL,TIME_LIMIT_80
#SBATCH --mail-user=svante.arrhenius@example.org
#SBATCH --mem-per-cpu=2G

python downscale.py --region alps --years 1980-2020
