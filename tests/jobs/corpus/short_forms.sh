#!/bin/bash
# Everything in short options, several per line, as in a terse personal template.
#SBATCH -N 1 -n 2 -c 1
#SBATCH -t 0:30:00 -p debug
#SBATCH -J terse
#SBATCH -o out/%x.%j.log -e out/%x.%j.err

srun hostname
