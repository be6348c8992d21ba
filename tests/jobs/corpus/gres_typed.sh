#!/bin/bash
# GPUs of a given type through GRES: two A100s.
#SBATCH --job-name=a100-infer
#SBATCH --partition=wide
#SBATCH --gres=gpu:a100:2
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=8
#SBATCH --mem=64G
#SBATCH --time=02:00:00

vllm serve meta-llama/Llama-2-13b-hf --tensor-parallel-size 2 &
sleep 60 && python bench_client.py
