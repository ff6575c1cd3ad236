"""The host copies of GPU storages (relive.state.gpu_copies): only the blocks that changed are
copied again. The logic is device-independent, so it is tested here on CPU storages with
unpinned mirrors; tests/capture/test_thread_mode.py runs it on a GPU where there is one."""

from __future__ import annotations

import pytest

from relive.state import gpu_copies
from relive.state.gpu_copies import BLOCK, Mirrors

torch = pytest.importorskip("torch")


def _copy(mirrors: Mirrors, tensor) -> bytes:
    mirrors.start_snapshot()
    return bytes(mirrors.host_bytes(tensor.untyped_storage()))


def test_only_the_blocks_that_changed_are_copied_again() -> None:
    mirrors = Mirrors(limit=1 << 30, pin=False)
    data = torch.randn(5 * BLOCK // 8 + 3, dtype=torch.float64)  # 5 blocks and a partial one
    assert _copy(mirrors, data) == data.numpy().tobytes()
    assert mirrors.copied_bytes == data.numel() * 8

    assert _copy(mirrors, data) == data.numpy().tobytes()
    assert mirrors.copied_bytes == 24  # unchanged: only the partial last block, never fingerprinted

    data[BLOCK // 8 + 5] += 1.0  # block 1
    data[3 * BLOCK // 8] = -data[3 * BLOCK // 8]  # block 3: two sign bits, which cancel in a plain sum
    data[3 * BLOCK // 8 + 7] = -data[3 * BLOCK // 8 + 7]
    assert _copy(mirrors, data) == data.numpy().tobytes()
    assert mirrors.copied_bytes == 2 * BLOCK + 24


def test_a_storage_past_the_limit_is_copied_whole_without_a_mirror() -> None:
    mirrors = Mirrors(limit=BLOCK, pin=False)
    data = torch.arange(BLOCK // 2, dtype=torch.int32)  # 2 MiB
    assert _copy(mirrors, data) == data.numpy().tobytes()
    data += 1
    assert _copy(mirrors, data) == data.numpy().tobytes()
    assert mirrors.copied_bytes == data.numel() * 4


def test_mirrors_no_snapshot_used_lately_are_freed() -> None:
    mirrors = Mirrors(limit=1 << 30, pin=False)
    old = torch.zeros(BLOCK // 4)
    kept = torch.ones(8)
    _copy(mirrors, old)
    for _ in range(gpu_copies._STALE_SNAPSHOTS + 1):
        _copy(mirrors, kept)
    assert [m.host.numel() for m in mirrors._mirrors.values()] == [32]


def test_runs_of_blocks() -> None:
    assert gpu_copies._runs([7, 1, 2, 3, 3]) == [(1, 4), (7, 8)]
    assert gpu_copies._runs([]) == []


def test_a_copied_snapshot_reads_only_the_chunks_of_blocks_copied_again(tmp_path) -> None:
    """The store is told each block's version (a new one at each copy into the mirror): a
    copied snapshot keeps the chunks of blocks not copied again unread, where it would
    fingerprint the whole mirror (no page watching: the GPU writes it by DMA)."""
    from relive import _native
    from relive.capture.copying import Staging

    store = _native.Store.open(tmp_path / "store", create=True)
    direct = _native.Store.open(tmp_path / "direct", create=True)
    mirrors = Mirrors(limit=1 << 30, pin=False)
    data = torch.randn(8 * BLOCK // 8, dtype=torch.float64)  # 8 blocks

    def snapshot() -> int:
        mirrors.start_snapshot()
        staging = Staging(store, watch_pages=False)
        stand_in, _, _ = staging.put_record(b"p", [mirrors.host_bytes(data.untyped_storage())])
        written: list[str] = []
        staging.when_written(stand_in, written.append)
        staging.write()
        assert written == [direct.put_record(b"p", [data.numpy()])[0]]  # the record a fork writes
        _, buffers = store.get_record(written[0])
        assert bytes(buffers[0]) == data.numpy().tobytes()
        return int(staging.unread_bytes)

    assert snapshot() == 0  # nothing to go by: fingerprinted
    assert snapshot() == 8 * BLOCK  # no block copied again: nothing read
    data[3 * BLOCK // 8 + 1] += 1.0
    assert snapshot() == 7 * BLOCK  # block 3 copied again: its chunks copied, the rest unread
    assert snapshot() == 8 * BLOCK


def test_a_mirror_freed_is_forgotten_by_the_store(monkeypatch) -> None:
    forgotten = []
    monkeypatch.setattr(gpu_copies._native, "forget_written", lambda addr, n: forgotten.append(n))
    mirrors = Mirrors(limit=1 << 30, pin=False)
    old = torch.zeros(BLOCK // 4)
    _copy(mirrors, old)
    for _ in range(gpu_copies._STALE_SNAPSHOTS + 1):
        _copy(mirrors, torch.ones(8))
    assert BLOCK in forgotten  # before its memory could be used again
