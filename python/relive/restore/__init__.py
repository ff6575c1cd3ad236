"""Loading snapshots back: objects, frames, and (later) resuming a program where it stood."""

from relive.restore.load import Frame, Snapshot, Variables, load

__all__ = ["Frame", "Snapshot", "Variables", "load"]
