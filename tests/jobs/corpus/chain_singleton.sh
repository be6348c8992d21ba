#!/bin/bash
# A nightly evaluation that must never overlap with itself: only one job of this name runs at a time.
#SBATCH --job-name=nightly-eval
#SBATCH --partition=cpu
#SBATCH --dependency=singleton
#SBATCH --time=02:00:00
#SBATCH --cpus-per-task=2
#SBATCH --mem=4G

python eval_nightly.py --checkpoint latest
