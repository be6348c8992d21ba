#!/bin/bash
# DeepSpeed launcher with a generated hostfile: one task per node, typed GPUs through --gres.
#SBATCH --job-name=ds-hostfile
#SBATCH --partition=wide
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gres=gpu:a100:4
#SBATCH --cpus-per-task=32
#SBATCH --mem=500G
#SBATCH --exclusive
#SBATCH --time=12:00:00

scontrol show hostnames "$SLURM_JOB_NODELIST" | sed 's/$/ slots=4/' > hostfile.$SLURM_JOB_ID
deepspeed --hostfile hostfile.$SLURM_JOB_ID --master_addr "$(hostname)" finetune.py --deepspeed ds_config.json
