#!/bin/bash
# Single-node DDP fine-tuning with torchrun: one task that starts one worker per GPU on a 2-GPU node.
#SBATCH --job-name=bert-ft
#SBATCH --partition=gpu
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=2
#SBATCH --cpus-per-task=2
#SBATCH --mem=16G
#SBATCH --time=04:00:00
#SBATCH --output=logs/%x-%j.out

module load cuda/12.1
source ~/venvs/torch/bin/activate

export OMP_NUM_THREADS=$SLURM_CPUS_PER_TASK
torchrun --standalone --nproc_per_node=2 train.py \
    --model bert-base-uncased --epochs 3 --batch-size 32 --output-dir checkpoints/$SLURM_JOB_ID
