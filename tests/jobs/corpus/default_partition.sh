#!/bin/bash
# The smallest real script: a time limit and nothing else, so Slurm's default partition is used.
#SBATCH --time=15

python count_words.py corpus.txt
