"""Fingerprints of the bytes before the position of each file a program has open for
writing at a snapshot.

``relive.capture.process`` records them; ``relive.restore.process.cut_files`` compares them
before anything is cut or reopened, to tell a file the killed run only wrote on (the same)
from one it wrote anew after the snapshot (not the same: the bytes the resumed program
would write on from were not kept).
"""

from __future__ import annotations

import builtins
import hashlib

# How much of a file before a position a snapshot fingerprints: one read of a page per
# file open for writing, in the program's process.
TAIL_BYTES = 4096


def _fingerprint(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def tail_fingerprint(path: str, position: int) -> str | None:
    """A fingerprint of the ``TAIL_BYTES`` before ``position`` in the file at ``path``;
    None if it is missing, unreadable or shorter."""
    start = max(0, position - TAIL_BYTES)
    try:
        with builtins.open(path, "rb", buffering=0) as f:
            f.seek(start)
            data = f.read(position - start)
    except OSError:
        return None
    return _fingerprint(data) if len(data) == position - start else None


def fd_tail_fingerprint(fd: int, position: int) -> str | None:
    """The same for the open file ``fd``, opened anew for reading (it may be open for writing
    only) without moving its offset."""
    return tail_fingerprint(f"/proc/self/fd/{fd}", position)
