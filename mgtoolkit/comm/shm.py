"""A shared-memory all-reduce for ranks on one machine.

Synchronized batch norm needs two small all-reduces per layer and step, strictly one after
the other; over gloo each costs about a millisecond even between processes of one machine.
When every rank of the group runs on the same machine, CPU tensors are summed through a
shared-memory segment instead (checked to be truly shared when the group starts;
``MGTOOLKIT_SHARED_MEMORY=0`` turns it off). Every rank gets the bit-identical result. The
segment is private to its owner (mode 0600, created with ``O_EXCL``) and unlinked as soon as
every rank has mapped it.
"""

from __future__ import annotations

import os
import time
import weakref

import numpy as np
import torch

from mgtoolkit.runtime import process_alive

__all__ = ["sweep_stale_segments"]

#: Segment names: ``/dev/shm/<prefix><pid of the creating rank>-<random hex>``.
SEGMENT_PREFIX = "mgtoolkit-"


def sweep_stale_segments(directory: str = "/dev/shm") -> list[str]:
    """Remove this user's segments whose creating process is gone; returns their paths.

    A segment is unlinked as soon as every rank has mapped it, so one is left behind only when
    its run died in between (killed while its ranks met). Segments of other users, of live
    processes, and names this module did not write are left alone.
    """
    removed = []
    try:
        entries = os.scandir(directory)
    except OSError:
        return removed
    uid = os.getuid()
    with entries:
        for entry in entries:
            name = entry.name
            if not name.startswith(SEGMENT_PREFIX):
                continue
            pid_text = name[len(SEGMENT_PREFIX) :].split("-", 1)[0]
            if not pid_text.isdigit():
                continue
            try:
                if entry.stat(follow_symlinks=False).st_uid != uid or process_alive(int(pid_text)):
                    continue
                os.unlink(entry.path)
                removed.append(entry.path)
            except OSError:
                continue  # gone meanwhile, or not ours to remove
    return removed


class _SharedMemoryChannel:
    """Sum tensors over the ranks of one machine through a shared-memory segment.

    Layout: one int64 round counter and one pid per rank, then two banks (alternate rounds)
    of one slot per rank. In round k a rank copies its part into its slot of bank k % 2,
    publishes k, waits until every rank has published k and sums the slots in rank order —
    the same additions on every rank, hence bit-identical sums. A bank is rewritten two rounds
    later, after every rank has published the round in between, i.e. finished reading it.
    Larger tensors pass in several rounds of ``SLOT_BYTES``.

    The slots are torch views of the segment, so a round is one copy into the own slot and one
    addition per peer straight out of the others' slots: about 12 µs in all for the small
    vectors of synchronized batch norm, which exchanges ~30 of them per step.

    x86-64 only: it relies on stores (and loads) staying in program order (TSO); elsewhere the
    process group is used.
    """

    SLOT_BYTES = 1 << 20
    #: How long a waiting rank polls before it starts to sleep, in seconds (see ``spin_s``).
    SPIN_S = 0.02

    def __init__(self, rank: int, size: int, path: str, *, create: bool):
        import mmap

        self.rank, self.size = rank, size
        header = 8 * 2 * size
        total = header + 2 * size * self.SLOT_BYTES
        flags = os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0)
        fd = os.open(path, flags, 0o600)
        try:
            if create:
                os.ftruncate(fd, total)
            self._map = mmap.mmap(fd, total)
        finally:
            os.close(fd)
        # The round counters as a memoryview: reading one is a plain load of shared memory
        # (~50 ns from Python), which is what the wait loop does over and over.
        self._words = memoryview(self._map).cast("q")
        self.seq = self._words[:size]
        self.pids = np.frombuffer(self._map, dtype=np.int64, count=size, offset=8 * size)
        self.banks = torch.frombuffer(
            self._map, dtype=torch.uint8, offset=header, count=2 * size * self.SLOT_BYTES
        ).view(2, size, self.SLOT_BYTES)
        self._rows: dict[torch.dtype, list[list[torch.Tensor]]] = {}
        self.round = 0
        # Poll (a few µs between a peer's store and this rank seeing it) only when every rank
        # can have a core of its own; with more ranks than cores a polling rank would take
        # the core its peer needs, so it sleeps at once.
        self.spin_s = self.SPIN_S if size <= len(os.sched_getaffinity(0)) else 0.0

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """Sum of the CPU tensor ``t`` over the ranks, as a new contiguous tensor."""
        src = t.detach().reshape(-1)
        rows = self._rows.get(src.dtype) or self._make_rows(src.dtype)
        step = self.SLOT_BYTES // src.element_size()
        sums = []
        for start in range(0, max(src.numel(), 1), step):
            part = src[start : start + step]
            n = part.numel()
            bank = rows[(self.round + 1) % 2]
            bank[self.rank][:n].copy_(part)
            self._publish_and_wait()
            # Rank-order accumulation: the same operations, hence bits, on every rank.
            acc = torch.add(bank[0][:n], bank[1][:n]) if self.size > 1 else bank[0][:n].clone()
            for r in range(2, self.size):
                acc += bank[r][:n]
            sums.append(acc)
        return (sums[0] if len(sums) == 1 else torch.cat(sums)).view(t.shape)

    def exchange(
        self, sends: list[tuple[int, torch.Tensor]], recvs: list[tuple[int, torch.Tensor]]
    ) -> None:
        """Point-to-point with the ranks next to this one (:func:`mgtoolkit.comm.p2p.exchange`).

        Each slot is split in two halves: messages to the rank below, to the rank above. Every
        rank takes part in every round (as in :meth:`sum`); the number of rounds follows from
        the largest message this rank sends or receives, which is the same on every rank
        because each link between neighbours carries a message of each direction's shape.
        """
        half = self.SLOT_BYTES // 2
        largest = max(t.numel() * t.element_size() for _, t in sends + recvs)
        out = [
            (0 if peer < self.rank else half, t.reshape(-1).view(torch.uint8)) for peer, t in sends
        ]
        into = [
            (peer, half if peer < self.rank else 0, t.view(-1).view(torch.uint8))
            for peer, t in recvs
        ]
        for start in range(0, max(largest, 1), half):
            bank = self.banks[(self.round + 1) % 2]
            for offset, data in out:
                part = data[start : start + half]
                bank[self.rank, offset : offset + part.numel()].copy_(part)
            self._publish_and_wait()
            for peer, offset, data in into:
                part = data[start : start + half]
                part.copy_(bank[peer, offset : offset + part.numel()])

    def _make_rows(self, dtype: torch.dtype) -> list[list[torch.Tensor]]:
        """``rows[bank][rank]``: the slots as 1-D tensors of ``dtype`` (made once per dtype)."""
        typed = self.banks.view(dtype)
        self._rows[dtype] = [[typed[b, r] for r in range(self.size)] for b in range(2)]
        return self._rows[dtype]

    def _publish_and_wait(self) -> None:
        self.round += 1
        k = self.round
        self.seq[self.rank] = k  # published after the data (x86-64 keeps the stores in order)
        if min(self.seq) >= k:
            return
        seq, deadline = self.seq, time.perf_counter() + self.spin_s
        while time.perf_counter() < deadline:
            if min(seq) >= k:
                return
        self._sleep_until(k)

    def _sleep_until(self, k: int) -> None:
        """Sleep in growing steps until every rank has published round k; watch the peers."""
        t0 = time.monotonic()
        next_check, pause = t0 + 1.0, 1e-5
        while min(self.seq) < k:
            time.sleep(pause)
            pause = min(2 * pause, 1e-3)
            if time.monotonic() > next_check:
                next_check += 1.0
                self._check_peers(k, time.monotonic() - t0)

    def _behind(self, k: int) -> list[int]:
        return [r for r in range(self.size) if self.seq[r] < k]

    def _check_peers(self, k: int, waited: float) -> None:
        from torch.distributed import default_pg_timeout

        for r in self._behind(k):
            try:
                os.kill(int(self.pids[r]), 0)
            except ProcessLookupError:
                raise RuntimeError(
                    f"rank {r} (pid {self.pids[r]}) exited while rank {self.rank} waited for "
                    "it in an all-reduce"
                ) from None
            except PermissionError:
                pass  # alive, owned by another user
        if waited > default_pg_timeout.total_seconds():
            raise RuntimeError(
                f"rank {self.rank} waited {waited:.0f} s for ranks {self._behind(k)} in an "
                "all-reduce (timed out)"
            )

    def close(self) -> None:
        # Every view of the segment must be gone before the map can close.
        self.seq.release()
        self._words.release()
        self.seq = self.pids = self.banks = None
        self._rows.clear()
        self._map.close()


# Held weakly, as in mgtoolkit.comm.mpi: the cache must not keep a destroyed group alive.
_channel: dict = {"group": lambda: None, "channel": None}


def _shared_memory_channel() -> _SharedMemoryChannel | None:
    """The channel of the current default group, set up on first use (collectively)."""
    import torch.distributed as dist

    group = dist.group.WORLD
    if _channel["group"]() is group:
        return _channel["channel"]
    import platform
    import uuid

    if _channel["channel"] is not None:
        _channel["channel"].close()
    _channel.update(group=weakref.ref(group), channel=None)
    rank, size = dist.get_rank(), dist.get_world_size()
    enabled = os.environ.get("MGTOOLKIT_SHARED_MEMORY", "1") != "0"
    if not (enabled and platform.machine().lower() in ("x86_64", "amd64")) or not os.path.isdir(
        "/dev/shm"
    ):
        return None
    # Rank 0 creates the segment in /dev/shm (node-local memory, never a shared file system)
    # and writes a random token into it; a rank that reads the token back shares memory with
    # rank 0 (on another node the path does not exist).
    path = f"/dev/shm/{SEGMENT_PREFIX}{os.getpid()}-{uuid.uuid4().hex}"
    token = int.from_bytes(os.urandom(7), "little")
    proposal = [(path, token)]
    channel = None
    if rank == 0:
        sweep_stale_segments()
        try:
            channel = _SharedMemoryChannel(rank, size, path, create=True)
            channel.pids[0] = token
        except OSError:
            proposal = [(None, 0)]
    dist.broadcast_object_list(proposal, src=0)
    path, token = proposal[0]
    if rank > 0 and path is not None:
        try:
            channel = _SharedMemoryChannel(rank, size, path, create=False)
        except OSError:
            channel = None
    votes = [None] * size
    dist.all_gather_object(votes, channel is not None and int(channel.pids[0]) == token)
    if rank == 0 and channel is not None:
        os.unlink(path)  # every rank has opened (or failed to open) it; memory stays mapped
    if not all(votes):
        if channel is not None:
            channel.close()
        return None
    channel.pids[rank] = os.getpid()  # for telling a dead peer from a slow one
    dist.barrier()
    _channel["channel"] = channel
    return channel
