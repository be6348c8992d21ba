#!/bin/bash
# Starts no earlier than two hours from now, when the shared file system backup is over.
#SBATCH --job-name=post-backup
#SBATCH --partition=cpu
#SBATCH --begin=now+2hours
#SBATCH --time=01:00:00
#SBATCH --mem=1G

python reindex.py /project/index
