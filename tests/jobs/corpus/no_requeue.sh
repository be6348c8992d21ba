#!/bin/bash
# Writes to an external database: must never run twice, even after a node failure.
#SBATCH --job-name=db-ingest
#SBATCH --partition=cpu
#SBATCH --no-requeue
#SBATCH --time=00:40:00
#SBATCH --mem=2G

python ingest.py --source s3://bucket/2024/ --table events
