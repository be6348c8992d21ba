#!/bin/bash
# Names the Slurm account and QOS explicitly, as group templates do.
#SBATCH --job-name=grant-billed
#SBATCH --account=demo
#SBATCH --qos=normal
#SBATCH --partition=cpu
#SBATCH --time=02:00:00
#SBATCH --ntasks=1

python simulate.py --steps 1e6
