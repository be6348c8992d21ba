#!/bin/bash
# Directive values in quotes, with spaces and a '#' inside, and comments after them.
#SBATCH --job-name="protein fold #7"     # the name the PI asked for
#SBATCH --partition='debug'              # short queue while testing
#SBATCH --time="00:20:00"                # twenty minutes
#SBATCH --comment="target T1104, 'relaxed'"
#SBATCH --output="logs/fold %j.out"      # a space in the path

python fold.py --target T1104
