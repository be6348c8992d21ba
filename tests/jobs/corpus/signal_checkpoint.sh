#!/bin/bash
# Long training split into requeued chunks: USR1 to the batch shell 60 s before the end, then requeue.
# not through slurmrestd v0.0.38: --signal=B:USR1@60 (Slurm 22.05's REST parser rejects the B: prefix)
#SBATCH --job-name=ckpt-chunks
#SBATCH --partition=gpu
#SBATCH --gpus=1
#SBATCH --time=04:00:00
#SBATCH --signal=B:USR1@60
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=logs/%x.out

requeue() {
    echo "$(date): time is nearly up, saving and requeueing"
    kill -USR1 "$child"; wait "$child"
    scontrol requeue "$SLURM_JOB_ID"
}
trap requeue USR1
python train.py --resume checkpoints/last.pt &
child=$!
wait "$child"
