#!/bin/bash
# DeepSpeed ZeRO-3 on 2 nodes, one task per GPU, memory asked per GPU; the training processes get USR1
# two minutes before the time limit (they checkpoint), and the job is requeued to resume.
#SBATCH -J zero3-13b
#SBATCH -p wide
#SBATCH -N 2
#SBATCH --ntasks-per-node=4
#SBATCH --gpus-per-task=1
#SBATCH --cpus-per-task=6
#SBATCH --mem-per-gpu=64G
#SBATCH -t 20:00:00
#SBATCH --requeue
#SBATCH --signal=USR1@120
#SBATCH --open-mode=append
#SBATCH -o logs/%x-%j.log

srun --kill-on-bad-exit=1 python -u train_ds.py \
    --deepspeed --deepspeed_config ds_zero3.json --resume-from checkpoints/latest --checkpoint-on-signal USR1
