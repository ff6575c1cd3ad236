"""relive's exceptions: one small hierarchy, each message saying what to do."""

from __future__ import annotations

from relive._native import (
    CorruptionError,
    FormatError,
    ReliveError,
    StoreError,
    StoreNotFound,
)

__all__ = [
    "CorruptionError",
    "FormatError",
    "ManifestError",
    "NotResumable",
    "RefError",
    "ReliveError",
    "ResumeError",
    "StackAnalysisError",
    "StoreError",
    "StoreNotFound",
    "UntrustedStore",
    "VariableNotFound",
]


class RefError(ReliveError):
    """A snapshot reference (``latest``, an id prefix, ``REF~N``) matches no snapshot, or several."""


class VariableNotFound(ReliveError, KeyError):
    """A variable name that the snapshot does not hold."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class UntrustedStore(ReliveError):
    """A store that another user owns or may write to: loading from it could run their code."""


# -- resuming (relive.interp) --


class StackAnalysisError(ReliveError):
    """The flow analysis found two depths for one instruction: this code is not understood."""


class NotResumable(ReliveError):
    """A value or frame that cannot be captured for resuming; the message says why."""


class ResumeError(ReliveError):
    """A captured state cannot be resumed; the message says why."""


class ManifestError(CorruptionError):
    """A snapshot's manifest that is not JSON, makes no sense, or is of a newer format.

    ``run``: the run it names, when it was read far enough to say; ``newer``: written by
    a newer relive (nothing is damaged: upgrading relive reads it).
    """

    def __init__(self, message: str, run: str | None = None, newer: bool = False) -> None:
        super().__init__(message)
        self.run = run
        self.newer = newer
