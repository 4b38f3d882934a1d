"""Integrity of a dataset store: find damaged samples, record the check, mark them for repair.

Two checks, both on samples whose completion marker is set (the others are simply unwritten):

- :func:`quick_check` looks at the object files only — a missing shard or chunk file, a shard
  whose index (crc32c-checked, at the end of the file) is unreadable or points past the end of
  the file, an unsharded chunk shorter or longer than its blosc header says. It reads a few
  bytes per file, so ``data info``, ``data generate`` and ``fem solve`` run it every time.
- :func:`verify_store` (``mgtoolkit data verify``) reads and decodes every chunk and checks the
  values: finite everywhere, ν > 0, 0 ≤ u ≤ 1 for ``u_fem`` (the maximum principle). It stores
  a verification record in the root attributes (``verified``), which ``data info`` reports.

:func:`mark_for_repair` clears the markers of damaged samples — and of the samples sharing a
file with them, which are rewritten with it — and deletes their files, so that the writer's
usual resume (``generate`` for ν, ``fem solve`` for u_fem) redoes exactly those samples.
"""

from __future__ import annotations

import datetime
import hashlib
import itertools
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mgtoolkit.data.store import check_store, level_group, marker_name

__all__ = [
    "Damage",
    "VerifyReport",
    "mark_for_repair",
    "quick_check",
    "verification_status",
    "verify_store",
]

#: Tolerance of the range check 0 ≤ u ≤ 1 (float32 storage of a solution within [0, 1]).
U_TOLERANCE = 1e-5
#: Variables whose values are a solution of the problem, hence within [0, 1].
SOLUTIONS = ("u_fem",)


@dataclass(frozen=True)
class Damage:
    """One damaged sample: ``level``, ``variable``, ``sample`` index, what is wrong, and where."""

    level: int
    variable: str
    sample: int
    reason: str
    file: str

    def __str__(self) -> str:
        return (
            f"level {self.level} {self.variable} sample {self.sample}: {self.reason} ({self.file})"
        )


@dataclass
class VerifyReport:
    """What :func:`verify_store` found; ``ok`` when nothing is damaged."""

    path: Path
    damaged: list[Damage] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)  # "level1/nu": complete samples read

    @property
    def ok(self) -> bool:
        return not self.damaged

    def __str__(self) -> str:
        total = sum(self.checked.values())
        lines = [
            f"{self.path}: read {total} complete samples "
            f"({', '.join(f'{k} {v}' for k, v in self.checked.items())})"
        ]
        if self.ok:
            lines.append("  no damage found")
            return "\n".join(lines)
        lines.append(f"  {len(self.damaged)} damaged samples:")
        shown = self.damaged[:50]
        lines += [f"    {d}" for d in shown]
        if len(self.damaged) > len(shown):
            lines.append(f"    ... and {len(self.damaged) - len(shown)} more")
        variables = {d.variable for d in self.damaged}
        fixes = []
        if "nu" in variables:
            fixes.append("`mgtoolkit data generate --repair` (same arguments) rewrites ν")
        if variables & set(SOLUTIONS):
            fixes.append("`mgtoolkit fem solve --repair` re-solves u_fem")
        if variables - {"nu", *SOLUTIONS}:
            fixes.append("rerun the command that wrote the other fields")
        lines.append("  repair: " + "; ".join(fixes))
        return "\n".join(lines)


def _variables(group) -> list[str]:
    return sorted(
        k for k in group.array_keys() if not k.endswith("_complete") and marker_name(k) in group
    )


def _block_files(path: Path, level: int, variable: str, arr) -> list[tuple[int, int, list[str]]]:
    """``(start, stop, files)`` per write block (shard, or a sample's chunks) of ``variable``."""
    block = arr.shards or arr.chunks
    step = block[0]
    grid = [range(math.ceil(s / c)) for s, c in zip(arr.shape[1:], block[1:], strict=True)]
    encode = arr.metadata.chunk_key_encoding.encode_chunk_key
    base = path / level_group(level) / variable
    out = []
    for i, start in enumerate(range(0, arr.shape[0], step)):
        files = [str(base / encode((i, *rest))) for rest in itertools.product(*grid)]
        out.append((start, min(start + step, arr.shape[0]), files))
    return out


def _file_problem(file: str, arr) -> str | None:
    """What is wrong with one object file, judged from a few bytes; None when it looks whole."""
    try:
        size = os.path.getsize(file)
    except FileNotFoundError:
        return "file missing"
    except OSError as exc:
        return f"file unreadable ({exc.strerror or exc})"
    try:
        with open(file, "rb") as f:
            if arr.shards is not None:
                count = math.prod(s // c for s, c in zip(arr.shards, arr.chunks, strict=True))
                index_bytes = 16 * count + 4
                if size < index_bytes:
                    return f"file truncated ({size} bytes, its index alone needs {index_bytes})"
                f.seek(size - index_bytes)
                index = f.read(index_bytes)
                import google_crc32c

                if google_crc32c.value(index[:-4]) != int.from_bytes(index[-4:], "little"):
                    return "file truncated or corrupt (shard index checksum mismatch)"
                entries = np.frombuffer(index[:-4], dtype="<u8").reshape(-1, 2)
                used = entries[entries[:, 0] != np.iinfo(np.uint64).max]
                if used.size and int((used[:, 0] + used[:, 1]).max()) > size - index_bytes:
                    return "file truncated (shard index points past its end)"
            else:
                head = f.read(16)
                if len(head) < 16:
                    return f"file truncated ({size} bytes)"
                cbytes = int.from_bytes(head[12:16], "little")
                if cbytes != size:
                    return f"file truncated or corrupt ({size} bytes, its header says {cbytes})"
    except OSError as exc:
        return f"file unreadable ({exc.strerror or exc})"
    return None


def quick_check(path: str | os.PathLike, level: int, variable: str) -> dict[int, Damage]:
    """Damaged complete samples of ``variable`` at ``level`` found from file sizes and indexes.

    Cheap (a stat and a few bytes per file). Values are not decoded: see :func:`verify_store`.
    """
    import zarr

    path = Path(path)
    group = zarr.open_group(str(path), mode="r")[level_group(level)]
    if variable not in group or marker_name(variable) not in group:
        return {}
    arr = group[variable]
    done = np.asarray(group[marker_name(variable)][:], dtype=bool)
    found: dict[int, Damage] = {}
    for start, stop, files in _block_files(path, level, variable, arr):
        if not done[start:stop].any():
            continue
        for file in files:
            problem = _file_problem(file, arr)
            if problem:
                for s in range(start, stop):
                    if done[s]:
                        found[s] = Damage(level, variable, s, problem, file)
                break
    return found


def _value_problem(variable: str, values: np.ndarray) -> str | None:
    if not np.all(np.isfinite(values)):
        bad = int(np.count_nonzero(~np.isfinite(values)))
        return f"{bad} NaN or inf values"
    if variable == "nu" and np.any(values <= 0):
        return f"ν ≤ 0 (min {float(values.min()):.3g})"
    if variable in SOLUTIONS:
        lo, hi = float(values.min()), float(values.max())
        if lo < -U_TOLERANCE or hi > 1 + U_TOLERANCE:
            return f"u outside [0, 1] (min {lo:.3g}, max {hi:.3g})"
    return None


def _read_problem(arr, sample: int, variable: str) -> str | None:
    """Decode one sample — chunk by chunk when it is split into spatial chunks, so memory stays
    at one chunk whatever the resolution — and check its values."""
    from mgtoolkit.data._tasks import chunk_regions

    if arr.chunks[1] >= arr.shape[1]:
        return _value_problem(variable, np.asarray(arr[sample]))
    for region in chunk_regions(arr.shape[1:], arr.chunks[1:], ()):
        problem = _value_problem(variable, np.asarray(arr[(sample, *region)]))
        if problem:
            return problem
    return None


def verify_store(
    path: str | os.PathLike,
    *,
    levels: list[int] | None = None,
    variables: list[str] | None = None,
    record: bool = True,
) -> VerifyReport:
    """Read every chunk of the complete samples and report the damaged ones.

    Parameters
    ----------
    path : path-like
        A dataset store.
    levels, variables : list, optional
        Restrict the check (default: every level, every variable with a completion marker).
    record : bool
        Store the result in the root attribute ``verified`` (when the whole store was checked
        and it is writable), which ``mgtoolkit data info`` reports.
    """
    import zarr

    path = Path(path)
    attrs = check_store(path)
    root = zarr.open_group(str(path), mode="r")
    report = VerifyReport(path)
    for level in levels or range(1, attrs["levels"] + 1):
        group = root[level_group(level)]
        for variable in _variables(group):
            if variables is not None and variable not in variables:
                continue
            arr = group[variable]
            done = np.asarray(group[marker_name(variable)][:], dtype=bool)
            report.checked[f"{level_group(level)}/{variable}"] = int(done.sum())
            quick = quick_check(path, level, variable)
            for start, stop, files in _block_files(path, level, variable, arr):
                for s in range(start, stop):
                    if not done[s]:
                        continue
                    if s in quick:
                        report.damaged.append(quick[s])
                        continue
                    try:
                        problem = _read_problem(arr, s, variable)
                    except Exception as exc:  # codec or checksum errors of several types
                        problem = f"unreadable ({type(exc).__name__}: {str(exc)[:120]})"
                    if problem:
                        file = files[0] if len(files) == 1 else str(Path(files[0]).parent)
                        report.damaged.append(Damage(level, variable, s, problem, file))
    if record and levels is None and variables is None:
        _record(path, report)
    return report


def _fingerprint(path: Path) -> str:
    """Hash of the names, sizes and times of the store's files below the root: a record is
    current while no file changed (a rewrite, a truncation or a deletion all show)."""
    digest = hashlib.sha256()
    for file in sorted(path.glob("level*/**/*")):
        try:
            st = file.stat()
        except OSError:
            continue
        if file.is_file():
            rel = file.relative_to(path).as_posix()
            digest.update(f"{rel}:{st.st_size}:{st.st_mtime_ns};".encode())
    return digest.hexdigest()[:16]


def _record(path: Path, report: VerifyReport) -> None:
    import zarr

    from mgtoolkit import __version__

    entry = {
        "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "mgtoolkit_version": __version__,
        "samples_read": sum(report.checked.values()),
        "damaged": len(report.damaged),
        "files": _fingerprint(path),
    }
    try:
        zarr.open_group(str(path), mode="r+").attrs["verified"] = entry
    except OSError:
        pass  # a store the user may read but not write: the report is still printed


def verification_status(path: str | os.PathLike, attrs: dict[str, Any]) -> str:
    """One line for ``data info``: when the store was last verified, and whether it changed."""
    entry = attrs.get("verified")
    if not isinstance(entry, dict):
        return "not verified (run `mgtoolkit data verify` to read every chunk)"
    when = entry.get("time", "?")
    if entry.get("files") != _fingerprint(Path(path)):
        return f"verified {when}, but files changed since (run `mgtoolkit data verify` again)"
    if entry.get("damaged"):
        return f"verified {when}: {entry['damaged']} damaged samples (repair with --repair)"
    return f"verified {when}: no damage in {entry.get('samples_read', '?')} samples"


def mark_for_repair(path: str | os.PathLike, damaged: list[Damage]) -> int:
    """Clear the markers of ``damaged`` samples and of their file-mates; delete their files.

    Returns the number of samples marked incomplete: the writer's next run redoes them.
    """
    import zarr

    path = Path(path)
    root = zarr.open_group(str(path), mode="r+")
    count = 0
    by_array: dict[tuple[int, str], set[int]] = {}
    for d in damaged:
        by_array.setdefault((d.level, d.variable), set()).add(d.sample)
    for (level, variable), samples in by_array.items():
        group = root[level_group(level)]
        arr, marker = group[variable], group[marker_name(variable)]
        done = np.asarray(marker[:], dtype=bool)
        for start, stop, files in _block_files(path, level, variable, arr):
            if not any(start <= s < stop for s in samples):
                continue
            for file in files:
                Path(file).unlink(missing_ok=True)
            count += int(done[start:stop].sum())
            done[start:stop] = False
        marker[:] = done
    return count
