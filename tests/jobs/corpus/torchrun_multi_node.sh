#!/bin/bash
# Multi-node torchrun (4 nodes x 4 A100): srun starts one torchrun per node, rendezvous on the first node.
#SBATCH --job-name=llama-pretrain
#SBATCH --partition=wide
#SBATCH --nodes=4
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=16
#SBATCH --mem=480G
#SBATCH --constraint=a100
#SBATCH --exclusive
#SBATCH --time=1-12:00:00
#SBATCH --output=logs/%x-%j.out
#SBATCH --error=logs/%x-%j.err

set -euo pipefail
head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
export NCCL_DEBUG=WARN

srun torchrun \
    --nnodes="$SLURM_NNODES" --nproc_per_node=4 \
    --rdzv_id="$SLURM_JOB_ID" --rdzv_backend=c10d --rdzv_endpoint="$head_node:29500" \
    pretrain.py --config configs/7b.yaml
