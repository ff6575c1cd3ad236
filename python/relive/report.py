"""relive's own messages to the user: on stderr, prefixed, and each kind only once per run."""

from __future__ import annotations

import sys

_said: set[str] = set()


def warn(message: str) -> None:
    try:
        sys.stderr.write(f"relive: {message}\n")
        sys.stderr.flush()
    except Exception:  # a closed or broken stderr is the program's business, not a reason to fail
        pass


def warn_once(kind: str, message: str) -> None:
    if kind not in _said:
        _said.add(kind)
        warn(message)
