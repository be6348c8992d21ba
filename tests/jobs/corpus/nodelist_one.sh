#!/bin/bash
# Pinned to the node that holds the local SSD cache (-w).
#SBATCH -J cache-warm
#SBATCH -p cpu
#SBATCH -w localhost
#SBATCH -t 00:15:00

rsync -a /project/datasets/imagenet/ /local/imagenet/
