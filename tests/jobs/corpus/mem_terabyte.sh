#!/bin/bash
# Genome assembly on a fat-memory node: a terabyte of RAM.
#SBATCH --job-name=hifiasm-asm
#SBATCH --partition=wide
#SBATCH --nodes=1
#SBATCH --cpus-per-task=32
#SBATCH --mem=1T
#SBATCH --time=2-00:00:00
#SBATCH --output=asm_%j.log

hifiasm -o genome.asm -t $SLURM_CPUS_PER_TASK reads.hifi.fq.gz
