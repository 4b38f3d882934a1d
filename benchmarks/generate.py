"""Benchmark dataset generation: MB/s of ν written and peak memory per worker and in total.

Each case runs on a fresh LocalCluster (single-threaded worker processes) so that every
worker's peak resident memory (``ru_maxrss``) belongs to that case alone. The total peak is the
largest sum of resident memory of this process and all its children, sampled every 20 ms.
MB/s counts the uncompressed float32 bytes of ν over all levels per second of wall time
(store creation included); "disk" is what the compressed store occupies. With ``--repeat`` the
fastest run is shown, with the largest peaks of all runs.

    flock /tmp/mgtoolkit-heavy.lock .venv/bin/python benchmarks/generate.py
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import threading
import time
from pathlib import Path

import psutil

from mgtoolkit.data import generate

#: (resolution, samples) of the default cases, all 3D with 3 levels.
CASES = ((128, 16), (256, 4), (512, 1))
#: The requirement checked in the last column.
WORKER_LIMIT_GIB = 2.0


class PeakSampler(threading.Thread):
    """Largest total RSS of this process and its descendants (bytes), sampled in the background."""

    def __init__(self, interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.interval, self.peak, self._done = interval, 0, threading.Event()

    def run(self) -> None:
        me = psutil.Process()
        while not self._done.is_set():
            total = 0
            for p in [me, *me.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass  # a process that just ended
            self.peak = max(self.peak, total)
            self._done.wait(self.interval)

    def stop(self) -> int:
        self._done.set()
        self.join()
        return self.peak


def _worker_peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _warm_up() -> None:
    import zarr.codecs  # noqa: F401

    import mgtoolkit.data.generate  # noqa: F401


def run_case(resolution: int, samples: int, *, levels: int, workers: int, root: Path) -> dict:
    from mgtoolkit.cluster import client_context

    path = root / f"bench-{resolution}.zarr"
    with client_context(workers=workers) as client:
        client.run(_warm_up)  # imports in the workers are not generation time
        sampler = PeakSampler()
        sampler.start()
        t0 = time.perf_counter()
        generate(path, dim=3, resolution=resolution, levels=levels, samples=samples, seed=0,
                 client=client, progress=False)  # fmt: skip
        wall = time.perf_counter() - t0
        total_peak = sampler.stop()
        worker_peaks = client.run(_worker_peak_rss).values()
    nu_bytes = 4 * samples * sum((resolution >> lv) ** 3 for lv in range(levels))
    disk = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    shutil.rmtree(path)
    return {
        "case": f"{resolution}³ × {samples}",
        "nu_mib": nu_bytes / 2**20,
        "disk_mib": disk / 2**20,
        "wall_s": wall,
        "mb_s": nu_bytes / 1e6 / wall,
        "worker_peak_gib": max(worker_peaks) / 2**30,
        "total_peak_gib": total_peak / 2**30,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--levels", type=int, default=3)
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs per case; the fastest is shown (shared machines)",
    )
    parser.add_argument(
        "--dir", default=None, help="where stores are written (default: a temp dir)"
    )
    parser.add_argument(
        "--cases", default=",".join(f"{r}x{s}" for r, s in CASES), help="e.g. 128x16,512x1"
    )
    args = parser.parse_args()
    cases = [tuple(int(v) for v in c.split("x")) for c in args.cases.split(",")]
    root = Path(args.dir or tempfile.mkdtemp(prefix="mgtoolkit-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"3D KL generation, {args.levels} levels, {args.workers} single-threaded workers, {root}")
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    header = (
        f"{'case':<12} {'ν MiB':>8} {'disk MiB':>9} {'wall s':>7} {'MB/s':>7} "
        f"{'peak/worker GiB':>16} {'peak total GiB':>15}  worker ≤ {WORKER_LIMIT_GIB:g} GiB"
    )
    print(header)
    print("-" * len(header))
    for resolution, samples in cases:
        runs = [
            run_case(resolution, samples, levels=args.levels, workers=args.workers, root=root)
            for _ in range(args.repeat)
        ]
        r = min(runs, key=lambda run: run["wall_s"])
        r["worker_peak_gib"] = max(run["worker_peak_gib"] for run in runs)
        r["total_peak_gib"] = max(run["total_peak_gib"] for run in runs)
        ok = "yes" if r["worker_peak_gib"] <= WORKER_LIMIT_GIB else "NO"
        print(
            f"{r['case']:<12} {r['nu_mib']:>8.0f} {r['disk_mib']:>9.0f} {r['wall_s']:>7.1f} "
            f"{r['mb_s']:>7.0f} {r['worker_peak_gib']:>16.2f} {r['total_peak_gib']:>15.2f}  {ok}",
            flush=True,
        )
    print(
        "for comparison, one whole 512³ volume at once would need 1.0 GiB (float64 log ν) "
        "+ 0.5 GiB (float32 ν) per worker before compression"
    )
    if not args.dir:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
