"""relive: durable, atomic, time-versioned Python programs.

Run a script under ``relive run`` and its whole state is snapshotted as it runs;
``relive.load`` brings any past state back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING as _TYPE_CHECKING, Any as _Any

from relive.errors import ReliveError

if _TYPE_CHECKING:
    from relive.restore.load import Frame, Snapshot, load
    from relive.tracing import trace

__version__ = "0.1.0"
__all__ = ["ReliveError", "Frame", "Snapshot", "checkpoint", "load", "trace", "__version__"]


# Imported when first asked for: the loader brings the unpickling machinery (0.13 s), which
# `relive log` and a program under `relive run` do not need at start.
_LAZY = {"Frame": "relive.restore.load", "Snapshot": "relive.restore.load", "load": "relive.restore.load",
         "trace": "relive.tracing"}


def __getattr__(name: str) -> _Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'relive' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


def checkpoint() -> str | None:
    """Take a snapshot here, now, and return its id.

    Inside a program run by ``relive run`` this snapshots the calling frame and every
    frame above it. Anywhere else it warns and does nothing. It never raises.
    """
    from relive import capture

    return capture.checkpoint()


def load_ipython_extension(ip: object) -> None:
    """``%load_ext relive``: a snapshot after every cell, and the ``%relive`` magic (relive.notebook)."""
    from relive.notebook import load as load_notebook

    load_notebook(ip)


def unload_ipython_extension(ip: object) -> None:
    """``%unload_ext relive``: no more snapshots."""
    from relive.notebook import unload

    unload(ip)
