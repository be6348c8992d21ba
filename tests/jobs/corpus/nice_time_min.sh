#!/bin/bash
# Low-priority filler work: nice 100, and any slot of at least 30 minutes will do.
#SBATCH --job-name=filler
#SBATCH --partition=cpu
#SBATCH --nice=100
#SBATCH --time=04:00:00
#SBATCH --time-min=30
#SBATCH --mem=500M

python process_backlog.py --max-items 10000
