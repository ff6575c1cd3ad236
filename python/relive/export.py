"""Writing a loaded value to a file for ``relive get -o``: the format the file's name
asks for, or a one-line refusal before the file is created; never a partial file."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from typing import IO, Any

from relive.errors import ReliveError
from relive.state import deep, describe


class ExportError(ReliveError):
    """A value that cannot be written in the format the file's name asks for."""


def save(value: Any, path: str) -> None:
    """Write ``value`` to ``path``: .npy (arrays and tensors), .json, or a pickle by value.

    The value is converted before the file is created, and written to a temporary file
    beside it that is renamed over ``path`` only once complete."""
    kind = os.path.splitext(path)[1].lower()
    if kind == ".npy":
        write = _npy(value, path)
    elif kind == ".json":
        write = _json(value, path)
    else:
        write = _pickle(value, path)
    _write_atomically(path, write)


def as_json(value: Any) -> dict[str, Any]:
    """``{"value": ...}`` when JSON holds the value exactly, ``{"repr": ...}`` otherwise."""
    try:
        return {"value": json.loads(json.dumps(value, allow_nan=False))}
    except (TypeError, ValueError, RecursionError):
        return {"repr": describe.safe_repr(value)}


def _npy(value: Any, path: str) -> Callable[[IO[bytes]], None]:
    import numpy

    if hasattr(value, "detach") and hasattr(value, "numpy"):  # a tensor
        value = value.detach().cpu().numpy()
    try:
        array = numpy.asarray(value)
    except Exception as exc:
        why = f"{type(exc).__name__}: {exc}"
    else:
        why = "it holds Python objects, not numbers" if array.dtype.hasobject else ""
    if why:
        raise ExportError(f"cannot write a {type(value).__name__} to {path} as an array ({why}): "
                          "use a .pkl file")
    return lambda f: numpy.save(f, array, allow_pickle=False)


def _json(value: Any, path: str) -> Callable[[IO[bytes]], None]:
    try:
        text = json.dumps(value, indent=2, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ExportError(f"cannot write a {type(value).__name__} to {path} as JSON ({exc}): "
                          "use a .pkl file") from None

    def write(f: IO[bytes]) -> None:
        f.write(text.encode() + b"\n")

    return write


def _pickle(value: Any, path: str) -> Callable[[IO[bytes]], None]:
    import pickle

    import cloudpickle

    def dumps() -> bytes:
        # By value: the script's own classes and functions (module __main__) go into the
        # file, so that it loads with a plain pickle.load, without the script.
        data: bytes = cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        return data

    try:
        try:
            data = dumps()
        except Exception as exc:
            if not deep.is_too_deep(exc):
                raise
            data = deep.call(dumps)  # a deep structure (a long linked list): where recursion has room
    except Exception as exc:
        raise ExportError(f"cannot pickle {type(value).__name__} for {path}: "
                          f"{type(exc).__name__}: {exc}") from None

    def write(f: IO[bytes]) -> None:
        f.write(data)

    return write


def _write_atomically(path: str, write: Callable[[IO[bytes]], None]) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    except OSError as exc:
        raise ExportError(f"cannot write {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # as open() would have created it, not mkstemp's 0600
        os.replace(temporary, path)
    except BaseException as exc:
        os.unlink(temporary)
        if isinstance(exc, OSError):
            raise ExportError(f"cannot write {path}: {exc.strerror or exc}") from None
        raise
