#!/usr/bin/env bash
# Segment a cohort with a Slurm job array: each array task takes its own fixed part of
# the slides (--shard slurm), so tasks never compete for a slide; claims in the shared
# output folder still keep a resubmitted or overlapping task from doing a slide twice.
#
#   sbatch --array=0-9 examples/slurm_array.sh /data/tcga/ /scratch/out [SEGMENT OPTIONS...]
#   cerberus status /scratch/out             # when the array has finished (exit 0: all done)
#
# Resubmitting the same array after a time limit or a failure continues where it stopped:
# finished slides are skipped, a dead task's slides are taken over.
#SBATCH --job-name=cerberus
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --mem=32G
#SBATCH --time=12:00:00
#SBATCH --output=cerberus-%A_%a.log
set -euo pipefail

SLIDES=${1:?usage: sbatch --array=0-N slurm_array.sh SLIDES_DIR OUT_DIR [OPTIONS...]}
OUT=${2:?usage: sbatch --array=0-N slurm_array.sh SLIDES_DIR OUT_DIR [OPTIONS...]}
shift 2
CPUS=${SLURM_CPUS_PER_TASK:-8}

# Tile readers get the CPUs the post-processing does not; later options win.
# Exit status 1 (some slides failed) is kept for sacct; 143 means Slurm stopped the task.
exec cerberus segment "$SLIDES" -o "$OUT" --shard slurm --status \
    --device "${CERBERUS_DEVICE:-cuda}" --batch-size 16 --post-workers 2 \
    --workers "$(( CPUS > 3 ? CPUS - 2 : 1 ))" "$@"
