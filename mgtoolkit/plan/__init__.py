"""Memory and time planner: will a training run, a tiled prediction or a FEM solve fit?

How the estimates are made. Every array of a U-Net step or of the FEM solver is a torch
tensor whose size is proportional to the number of cells (or nodes) — except the weights and
small coarse-grid data. So the planner runs the real computation once on two small grids,
counts the bytes of live tensors as they are created and freed (a torch dispatch mode sees
every allocation, forward, backward, recomputation and optimizer step alike), fits
``peak(N) = a + b·N`` in the number of cells N, and evaluates it at the requested size. Nothing
is hand-counted, so the estimates follow the code of :mod:`mgtoolkit.nn` and
:mod:`mgtoolkit.fem` as they change. Each process also carries a fixed runtime — the
interpreter, torch and its kernels, initialized on first use — :data:`RUNTIME_BYTES`, measured
on this project's machines.

Times come from the floating-point operations of the convolutions (counted by
:class:`torch.utils.flop_counter.FlopCounterMode` on the probe) divided by the throughput of
this machine (:func:`machine_gflops`, a short convolution benchmark), and for the FEM solver
from the probe's own wall time scaled by the node count. They are estimates for planning.

Data parallelism over p ranks splits the global batch into p equal local batches: memory per
rank follows the local batch, plus one gradient-sized communication buffer. Fields split in
slabs over S ranks (spatial parallelism) give each rank 1/S of a field's cells plus the halo
planes its convolutions copy, counted by probing the network on slabs; :func:`plan_layouts`
chooses the ranks per field of every level of a cycle.
"""

from mgtoolkit.plan.estimates import (
    Estimate,
    fem_estimate,
    inference_estimate,
    suggest_tile,
    training_estimate,
)
from mgtoolkit.plan.planner import LayoutPlan, LevelLayout, Plan, plan, plan_layouts
from mgtoolkit.plan.probes import (
    HEAP_SLACK,
    INFER_RUNTIME_BYTES,
    RUNTIME_BYTES,
    LiveTensorBytes,
    PlanError,
    machine_gflops,
)

__all__ = [
    "HEAP_SLACK",
    "INFER_RUNTIME_BYTES",
    "RUNTIME_BYTES",
    "Estimate",
    "LayoutPlan",
    "LevelLayout",
    "LiveTensorBytes",
    "Plan",
    "PlanError",
    "fem_estimate",
    "inference_estimate",
    "machine_gflops",
    "plan",
    "plan_layouts",
    "suggest_tile",
    "training_estimate",
]
