#!/usr/bin/env bash
# Testing on a Slurm cluster (MMDetection's convention):
#   [GPUS=8] [GPUS_PER_NODE=8] [CPUS_PER_TASK=5] [SRUN_ARGS="..."] \
#   bash tools/slurm_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT [test.py arguments ...]
# srun starts one task per GPU (GPUS in all, GPUS_PER_NODE per node); tools/test.py reads its
# rank and world size from Slurm (--launcher slurm). SRUN_ARGS is passed to srun word by word.
# PYTHON selects the interpreter.
set -e
usage() {
    echo "usage: [GPUS=8] [GPUS_PER_NODE=8] [CPUS_PER_TASK=5] [SRUN_ARGS=...] $0 PARTITION JOB_NAME CONFIG CHECKPOINT [test.py arguments ...]" >&2
    exit 2
}
if [ $# -lt 4 ] || [ -z "$1" ] || [ -z "$2" ] || [ -z "$3" ] || [ -z "$4" ]; then usage; fi
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
CHECKPOINT=$4
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
SRUN_ARGS=${SRUN_ARGS:-""}
for pair in "GPUS=$GPUS" "GPUS_PER_NODE=$GPUS_PER_NODE" "CPUS_PER_TASK=$CPUS_PER_TASK"; do
    case "${pair#*=}" in
        ''|*[!0-9]*|0) echo "error: ${pair%%=*} must be a positive integer, got '${pair#*=}'" >&2; exit 2 ;;
    esac
done
# fewer GPUs than a node holds: one node with GPUS tasks
TASKS_PER_NODE=$(( GPUS < GPUS_PER_NODE ? GPUS : GPUS_PER_NODE ))
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON=${PYTHON:-python}

PYTHONPATH="$ROOT":$PYTHONPATH \
srun -p "${PARTITION}" \
    --job-name="${JOB_NAME}" \
    --gres=gpu:"${TASKS_PER_NODE}" \
    --ntasks="${GPUS}" \
    --ntasks-per-node="${TASKS_PER_NODE}" \
    --cpus-per-task="${CPUS_PER_TASK}" \
    --kill-on-bad-exit=1 \
    ${SRUN_ARGS} \
    "${PYTHON}" -u "$ROOT/tools/test.py" "${CONFIG}" "${CHECKPOINT}" --launcher="slurm" "${@:5}"
