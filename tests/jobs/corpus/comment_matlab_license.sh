#!/bin/bash
# A MATLAB parfor job: one network license, and a note for whoever reads the queue.
#SBATCH --job-name=matlab-parfor
#SBATCH --partition=cpu
#SBATCH --cpus-per-task=2
#SBATCH --time=03:00:00
#SBATCH --licenses=matlab:1
#SBATCH --comment="ablation run 3, see wiki/ablations"

module load matlab/R2023b
matlab -batch "parpool('local', str2num(getenv('SLURM_CPUS_PER_TASK'))); run_ablation(3)"
