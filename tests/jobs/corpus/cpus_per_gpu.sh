#!/bin/bash
# One GPU with two CPUs attached to it for the data loader (--cpus-per-gpu).
#SBATCH --job-name=yolo-train
#SBATCH --partition=gpu
#SBATCH --gpus=1
#SBATCH --cpus-per-gpu=2
#SBATCH --mem=10G
#SBATCH --time=05:00:00

yolo train data=coco.yaml model=yolov8s.pt epochs=100 workers=$SLURM_CPUS_PER_GPU
