#!/bin/bash
# Fluent with two solver licenses (short form -L) on two tasks.
#SBATCH -J fluent-pipe
#SBATCH -p cpu
#SBATCH -n 2
#SBATCH -L ansys:2
#SBATCH -t 08:00:00

module load ansys/2023R2
fluent 3ddp -g -t$SLURM_NTASKS -i pipe_flow.jou
