#!/bin/bash
# A quick test with no --time at all: the debug partition's default applies.
#SBATCH --job-name=quick-test
#SBATCH --partition=debug
#SBATCH --ntasks=1

python -m pytest -q tests/
