"""Run under ``mpirun -n P``: sums over ranks through mgtoolkit.comm; rank 0 prints a JSON line.

Each rank contributes tensors that depend on its rank; rank 0 reports the transport of each
dtype, whether every rank holds the same bits, and the largest error against the exact sum,
and whether destroying the process group released it (a cache that kept it alive left its gloo
threads running into interpreter shutdown, which aborted the process now and then).
"""

import gc
import json
import weakref

import torch

from mgtoolkit import comm
from mgtoolkit.comm.ranks import init_from_environment

info = init_from_environment()
rank, size = comm.world()
tensors = {
    "float64": torch.arange(5, dtype=torch.float64) * (rank + 1) + 0.25,
    "float32": torch.full((300_000,), float(rank) + 0.5),
    "int64": torch.tensor([rank, 2 * rank], dtype=torch.int64),
    "bfloat16": torch.full((8,), float(rank + 1)).to(torch.bfloat16),
}
report = {}
for name, t in tensors.items():
    s = comm.all_reduce_sum(t)
    ranks = torch.arange(size, dtype=torch.float64)
    if name == "float64":
        exact = torch.arange(5, dtype=torch.float64) * (ranks + 1).sum() + 0.25 * size
    elif name == "float32":
        exact = torch.full((300_000,), float((ranks + 0.5).sum()), dtype=torch.float64)
    elif name == "int64":
        exact = torch.tensor([ranks.sum(), 2 * ranks.sum()], dtype=torch.float64)
    else:
        exact = torch.full((8,), float((ranks + 1).sum()), dtype=torch.float64)
    gathered = [torch.empty_like(s) for _ in range(size)]
    torch.distributed.all_gather(gathered, s.contiguous())
    report[name] = {
        "transport": comm.transport(t),
        "same_on_all_ranks": all(torch.equal(g, s) for g in gathered),
        "error": float((s.double() - exact).abs().max()),
        "dtype": str(s.dtype),
    }
group = weakref.ref(torch.distributed.group.WORLD)
torch.distributed.destroy_process_group()
gc.collect()
if rank == 0:
    print(json.dumps({"size": size, "sums": report, "group_released": group() is None}))
