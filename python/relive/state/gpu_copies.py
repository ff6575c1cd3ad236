"""Host copies of GPU storages, kept from one snapshot to the next.

A snapshot of a program on the GPU copies its tensors to host memory while the program
waits (fork cannot serve a process that initialized CUDA). Two things make that copy slow,
and this module removes both:

- Into fresh pageable memory, a device-to-host copy runs at the speed of page faults: on
  an H200 machine, 2 GB took 1.66 s into new pageable memory and 39 ms into pinned memory.
  Each storage gets a pinned buffer (its *mirror*), allocated once and reused.
- Most of a model does not change between two snapshots, or only in parts. Each storage's
  mirror keeps a fingerprint of every 1 MiB block, computed on the device (a few passes at
  the device's memory speed); only the blocks whose fingerprint changed are copied again.

A fingerprint is two sums over the block's 64-bit words, each word mixed with per-process
random odd multipliers and a shift first: without the mixing, two changes of the sign bit
(``x = -x`` on two float64 values) would cancel in any sum of multiples. With it, a change
goes unseen with a probability of about 2^-64 per sum, as for the store's XXH3 fingerprints.

The mirrors take pinned (page-locked) host memory, as much as the GPU state they copy: they
are bounded by ``limit`` (by default a quarter of the memory available at the first copy,
or ``--max-memory``); a storage that does not fit is copied into pageable memory as before.
A mirror unused for ``_STALE_SNAPSHOTS`` snapshots is freed.

A copied snapshot would then fingerprint each mirror on the CPU to find the chunks the store
lacks (page watching cannot see the GPU's writes). Instead, each block of a mirror carries a
version, a number new at each refresh that copies it (one counter for all mirrors), told to
the store (``_native.tell_written``): a chunk whose blocks kept their versions since its last
written copy keeps its id unread, and the others are copied without a fingerprint. A mirror
is forgotten there before its memory is freed.
"""

from __future__ import annotations

import itertools
import os
import sys
import weakref
from dataclasses import dataclass, field
from typing import Any

from relive import _native

BLOCK = 1 << 20  # bytes per fingerprinted block
_WORDS = BLOCK // 8
_BLOCKS_PER_PASS = 64  # blocks fingerprinted at once: bounds the device memory it takes (64 MiB per temporary)
_AVAILABLE_SHARE = 0.25
_STALE_SNAPSHOTS = 3


# A block's version: new at each refresh that writes it, never the same for two writes.
_VERSIONS = itertools.count(1)


@dataclass
class _Mirror:
    host: Any  # a pinned uint8 tensor of the storage's size
    sums: Any = None  # (blocks, 2) int64 on the device, as of the last copy; None: copy all
    used: int = 0  # the snapshot that last used it
    versions: list[int] = field(default_factory=list)  # each block's, as told to the store


class Mirrors:
    """The pinned host copies of one process's GPU storages."""

    def __init__(self, limit: int | None = None, pin: bool = True, tell: bool = True) -> None:
        self.limit = limit
        self._pin = pin  # False only in tests: mirrors of CPU storages, on a machine without CUDA
        self._tell = tell  # False only in benchmarks: the store fingerprints the mirrors
        self._mirrors: dict[tuple[str, int, int], _Mirror] = {}
        self._weights: dict[str, Any] = {}
        self._snapshot = 0
        self.copied_bytes = 0  # device-to-host bytes of the last snapshot (for tests and benchmarks)

    def start_snapshot(self) -> None:
        """A new snapshot begins: mirrors no snapshot used lately are freed."""
        self._snapshot += 1
        self.copied_bytes = 0
        for key, mirror in list(self._mirrors.items()):
            if self._snapshot - mirror.used > _STALE_SNAPSHOTS:
                _forget(mirror.host)
                del self._mirrors[key]

    def host_bytes(self, storage: Any) -> memoryview:
        """The bytes of GPU ``storage``, in host memory that stays valid until the next call
        for the same storage."""
        torch = sys.modules["torch"]
        nbytes = storage.nbytes()
        source = torch.empty(0, dtype=torch.uint8, device=storage.device).set_(storage)
        mirror = self._mirror(torch, storage, nbytes)
        if mirror is None:  # no room for a pinned copy
            self.copied_bytes += nbytes
            return memoryview(source.cpu().numpy())
        mirror.used = self._snapshot
        try:
            changed = self._refresh(torch, mirror, source)
        except RuntimeError:  # out of device memory for the fingerprints: copy it all
            mirror.sums = None
            mirror.host.copy_(source)
            self.copied_bytes += nbytes
            changed = list(range(len(mirror.versions)))
        if self._tell:
            _tell(mirror, changed)
        return memoryview(mirror.host.numpy())

    def _mirror(self, torch: Any, storage: Any, nbytes: int) -> _Mirror | None:
        key = (str(storage.device), storage.data_ptr(), nbytes)
        mirror = self._mirrors.get(key)
        if mirror is not None:
            return mirror
        limit = self._limit()
        held = sum(m.host.numel() for m in self._mirrors.values())
        if limit is not None and held + nbytes > limit:
            return None
        try:
            host = torch.empty(nbytes, dtype=torch.uint8, pin_memory=self._pin)
        except RuntimeError:  # the host would not lock that much memory
            return None
        mirror = self._mirrors[key] = _Mirror(host, versions=[0] * -(-nbytes // BLOCK))
        # However the tensor goes (start_snapshot forgets it first), the store forgets it
        # before its memory can hold anything else.
        weakref.finalize(host, _native.forget_written, host.data_ptr(), nbytes)
        return mirror

    def _limit(self) -> int | None:
        if self.limit is None:
            from relive.capture.copying import available_memory

            available = available_memory()
            self.limit = None if available is None else int(available * _AVAILABLE_SHARE)
        return self.limit

    def _refresh(self, torch: Any, mirror: _Mirror, source: Any) -> list[int]:
        """Copies into ``mirror`` the blocks of ``source`` whose fingerprint changed; returns
        their indices."""
        sums = self._fingerprints(torch, source)
        blocks = -(-source.numel() // BLOCK)
        if mirror.sums is None or sums is None:
            changed = list(range(blocks))
        else:
            changed = (sums != mirror.sums).any(dim=1).nonzero().flatten().tolist()
            full = source.numel() // BLOCK
            if full < blocks:  # the last, partial block has no fingerprint: always copied
                changed.append(full)
        for start, end in _runs(changed):
            lo, hi = start * BLOCK, min(end * BLOCK, source.numel())
            mirror.host[lo:hi].copy_(source[lo:hi], non_blocking=True)
            self.copied_bytes += hi - lo
        if source.device.type == "cuda":
            torch.cuda.synchronize(source.device)
        mirror.sums = sums
        return changed

    def _fingerprints(self, torch: Any, source: Any) -> Any:
        """(full blocks, 2) int64: two mixed sums of each whole block's words, on the device."""
        full = source.numel() // BLOCK
        if full == 0:
            return None
        words = source[: full * BLOCK].view(torch.int64).view(full, _WORDS)
        w = self._device_weights(torch, source.device)
        sums = torch.empty((full, 2), dtype=torch.int64, device=source.device)
        for lo in range(0, full, _BLOCKS_PER_PASS):
            part = words[lo:lo + _BLOCKS_PER_PASS]
            for lane in range(2):
                mixed = part * w[2 * lane]
                mixed ^= mixed >> 29
                mixed *= w[2 * lane + 1]
                sums[lo:lo + _BLOCKS_PER_PASS, lane] = mixed.sum(dim=1)
        return sums

    def _device_weights(self, torch: Any, device: Any) -> Any:
        """Four random odd multipliers per word of a block, on ``device`` (drawn from the
        operating system: the program's own generators are left alone)."""
        key = str(device)
        if key not in self._weights:
            raw = torch.frombuffer(bytearray(os.urandom(4 * BLOCK)), dtype=torch.int64).view(4, _WORDS)
            self._weights[key] = (raw | 1).to(device)
        return self._weights[key]


def _tell(mirror: _Mirror, written: list[int]) -> None:
    """The blocks just written into ``mirror`` get a new version, and the store is told."""
    version = next(_VERSIONS)
    for block in written:
        mirror.versions[block] = version
    _native.tell_written(mirror.host.data_ptr(), mirror.host.numel(), BLOCK, mirror.versions)


def _forget(host: Any) -> None:
    _native.forget_written(host.data_ptr(), host.numel())


def _runs(indices: list[int]) -> list[tuple[int, int]]:
    """Sorted block indices as [start, end) runs: ``[1, 2, 3, 7]`` -> ``[(1, 4), (7, 8)]``."""
    runs: list[tuple[int, int]] = []
    for i in sorted(set(indices)):
        if runs and runs[-1][1] == i:
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
    return runs


MIRRORS = Mirrors()
