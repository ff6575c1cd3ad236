"""Damage done by hand to a store, the way a bug, a disk or a person could: BLAKE3 of small
inputs (to forge checksums) and the fingerprint cache's layout. Not a relive module: tests only."""

from __future__ import annotations

import struct
from pathlib import Path

_IV = (0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A, 0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19)
_PERMUTATION = (2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8)
_CHUNK_START, _CHUNK_END, _ROOT = 1, 2, 8
_M = 0xFFFFFFFF


def _g(v: list[int], a: int, b: int, c: int, d: int, x: int, y: int) -> None:
    def rot(n: int, r: int) -> int:
        return ((n >> r) | (n << (32 - r))) & _M
    v[a] = (v[a] + v[b] + x) & _M
    v[d] = rot(v[d] ^ v[a], 16)
    v[c] = (v[c] + v[d]) & _M
    v[b] = rot(v[b] ^ v[c], 12)
    v[a] = (v[a] + v[b] + y) & _M
    v[d] = rot(v[d] ^ v[a], 8)
    v[c] = (v[c] + v[d]) & _M
    v[b] = rot(v[b] ^ v[c], 7)


def _compress(cv: tuple[int, ...], block: bytes, length: int, flags: int) -> tuple[int, ...]:
    m = list(struct.unpack("<16I", block))
    v = list(cv) + list(_IV[:4]) + [0, 0, length, flags]
    for round_ in range(7):
        for i, (a, b, c, d) in enumerate(((0, 4, 8, 12), (1, 5, 9, 13), (2, 6, 10, 14), (3, 7, 11, 15),
                                          (0, 5, 10, 15), (1, 6, 11, 12), (2, 7, 8, 13), (3, 4, 9, 14))):
            _g(v, a, b, c, d, m[2 * i], m[2 * i + 1])
        if round_ < 6:
            m = [m[p] for p in _PERMUTATION]
    return tuple(v[i] ^ v[i + 8] for i in range(8))


def blake3_small(data: bytes) -> bytes:
    """BLAKE3 of at most 1024 bytes (one chunk): enough to forge the store's small checksums."""
    assert len(data) <= 1024
    blocks = [data[i:i + 64] for i in range(0, len(data), 64)] or [b""]
    cv = _IV
    for i, block in enumerate(blocks):
        flags = (_CHUNK_START if i == 0 else 0) | (_CHUNK_END | _ROOT if i == len(blocks) - 1 else 0)
        cv = _compress(cv, block.ljust(64, b"\0"), len(block), flags)
    return struct.pack("<8I", *cv)


def rotate_fingerprint_ids(path: Path) -> int:
    """Rewrites ``cache/fingerprints`` with each entry's chunk id moved to the next entry (so
    each fingerprint names another chunk), checksum recomputed. Returns the number of entries."""
    data = path.read_bytes()
    body, check = data[:-32], data[-32:]
    assert blake3_small(body) == check, "the cache layout or the BLAKE3 here is not what the store writes"
    head, entries = body[:20], body[20:]
    rows = [entries[i:i + 48] for i in range(0, len(entries), 48)]
    ids = [row[16:] for row in rows]
    ids = ids[1:] + ids[:1]
    forged = head + b"".join(row[:16] + chunk_id for row, chunk_id in zip(rows, ids))
    path.write_bytes(forged + blake3_small(forged))
    return len(rows)
