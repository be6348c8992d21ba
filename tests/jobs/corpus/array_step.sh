#!/bin/bash
# Every fifth frame of a simulation is rendered: an array range with a step.
#SBATCH --job-name=render-frames
#SBATCH --partition=cpu
#SBATCH --array=0-300:5
#SBATCH --ntasks=1
#SBATCH --time=0:20:00
#SBATCH --output=frames/%x-%A-%a.out

blender -b scene.blend -o //frames/frame_##### -f $SLURM_ARRAY_TASK_ID
