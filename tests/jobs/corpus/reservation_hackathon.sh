#!/bin/bash
# Runs inside the reservation the admins made for the hackathon (the corpus test creates it).
#SBATCH --job-name=hackathon-demo
#SBATCH --partition=wide
#SBATCH --reservation=corpus-hackathon
#SBATCH --nodes=1
#SBATCH --gpus-per-node=4
#SBATCH --time=01:00:00

python demo.py --gpus 4
