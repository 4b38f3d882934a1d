#!/usr/bin/env bash
# Generate the example datasets and their FEM reference on an embedded dask LocalCluster
# (resumable: rerun after an interruption and only missing samples are computed).
set -euo pipefail
python -m mgtoolkit data generate --out data/kl2d.zarr --dim 2 --resolution 256 --levels 4 \
  --samples 512 --seed 0
python -m mgtoolkit fem solve data/kl2d.zarr --level 1
python -m mgtoolkit data generate --out data/kl3d.zarr --dim 3 --resolution 128 --levels 3 \
  --samples 256 --seed 0
python -m mgtoolkit fem solve data/kl3d.zarr --level 1
