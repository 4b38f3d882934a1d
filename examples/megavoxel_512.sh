#!/usr/bin/env bash
# 512³ end to end on one machine (2 cores, 24 GiB): generate → FEM solve → train a small
# network at 32³ → tiled prediction at 512³ → summary, leaving a viewer-ready store
# (levels 512³, 256³, 128³ with nu, u_fem, u_pred at level 1).
#
#   flock /tmp/mgtoolkit-heavy.lock bash examples/megavoxel_512.sh [OUT]       (OUT=runs/demo512)
#
# Peak memory is set by the FEM solve (~16 GiB at 512³); check `mgtoolkit plan --resolution 512`
# first. RES=128 runs the same pipeline small. Every step resumes if rerun.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/demo512}
RES=${RES:-512}
PY=${PY:-.venv/bin/python}
MG="$PY -m mgtoolkit"
mkdir -p "$OUT"

echo "== plan"
$MG plan --resolution "$RES" --convs-per-block 1 --batch 8 --phases infer fem || true

echo "== generate ${RES}³ (one KL field, 3 levels)"
$MG data generate --out "$OUT/data$RES.zarr" --dim 3 --resolution "$RES" --levels 3 --samples 1 --seed 0

echo "== FEM reference at level 1"
$MG fem solve "$OUT/data$RES.zarr" --level 1 --threads 2

echo "== train a small network at 32³ (half-V over 32³, 16³, 8³)"
$MG data generate --out "$OUT/train32.zarr" --dim 3 --resolution 32 --levels 3 --samples 36 --seed 1
sed "s#runs/demo512#$OUT#" examples/megavoxel_train.toml > "$OUT/train.toml"
$MG train "$OUT/train.toml" --run-dir "$OUT/run"

echo "== tiled prediction at ${RES}³ (tiles chosen to fit 7.5 GiB; streamed along z)"
$MG predict-tiled "$OUT/data$RES.zarr" "$OUT/run" --level 1 --memory 7.5

echo "== summary"
$MG data info "$OUT/data$RES.zarr"
$PY - "$OUT/data$RES.zarr" <<'PYEOF'
import sys
import numpy as np
import zarr
g = zarr.open_group(sys.argv[1], mode="r")["level1"]
fem, pred = g["u_fem"], g["u_pred"]
num = den = 0.0
for z in range(0, fem.shape[1], fem.chunks[1]):
    a, b = np.asarray(fem[0, z : z + fem.chunks[1]], float), np.asarray(pred[0, z : z + fem.chunks[1]], float)
    num, den = num + ((b - a) ** 2).sum(), den + (a**2).sum()
print(f"u_pred vs u_fem at level 1: relative L2 error {np.sqrt(num / den):.3e}")
PYEOF
