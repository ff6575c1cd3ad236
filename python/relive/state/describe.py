"""One-line descriptions of values for ``relive show``: type, shape, length."""

from __future__ import annotations

import types
from typing import Any

_MAX = 60
_CHEAP_REPR_MODULES = {"datetime", "decimal", "fractions", "pathlib", "uuid", "enum"}


def type_name(value: Any) -> str:
    t = type(value)
    module = t.__module__
    if module in ("builtins", "__main__"):
        return t.__qualname__
    return f"{module}.{t.__qualname__}"


def summary(value: Any) -> str:
    """Shape and dtype for arrays and tensors, length for containers, a short repr for scalars."""
    try:
        return _summary(value)
    except Exception:  # a broken __len__ or __repr__ must not cost the snapshot
        return ""


def _summary(value: Any) -> str:
    shape = getattr(value, "shape", None)
    dtype = getattr(value, "dtype", None)
    if shape is not None and (isinstance(shape, tuple) or type(shape).__name__ == "Size"):
        dims = "×".join(str(d) for d in shape) or "scalar"
        parts = [str(dtype)] if dtype is not None else []
        device = getattr(value, "device", None)
        if device is not None and str(device) != "cpu":
            parts.append(str(device))
        return " ".join([dims, *parts])
    if isinstance(value, (int, float, complex, bool)) or value is None:
        return _short(repr(value))
    if isinstance(value, (str, bytes, bytearray)):
        # The head only: repr of a 1 GB bytes would build a 4 GB string in the snapshot.
        return f"len {len(value)}: {_short(repr(value[:_MAX]))}"
    if isinstance(value, (list, tuple, dict, set, frozenset)):
        return f"len {len(value)}"
    if callable(value) and hasattr(value, "__qualname__"):
        return f"{value.__qualname__}"
    if type(value).__module__ in _CHEAP_REPR_MODULES:
        return _short(repr(value))
    # Anything else: its type says enough; an arbitrary __repr__ may be slow or odd.
    return ""


def safe_repr(value: Any) -> str:
    """``repr(value)``; for a structure too deep for it (a list nested 100 000 deep), its
    first levels."""
    try:
        return repr(value)
    except RecursionError:
        import reprlib

        shallow = reprlib.Repr()
        shallow.maxlevel, shallow.maxlist, shallow.maxdict, shallow.maxother = 20, 20, 20, 200
        return shallow.repr(value)


def attributes(value: Any) -> list[dict[str, str]] | None:
    """The attributes of an instance (its ``__dict__`` and slots), one level: name, type and
    summary of each. None for what has no attributes of its own (numbers, containers,
    classes, modules, functions)."""
    try:
        return _attributes(value)
    except Exception:  # an odd __dict__ or __slots__: the repr above it says enough
        return None


def _attributes(value: Any) -> list[dict[str, str]] | None:
    if isinstance(value, (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.MethodType)):
        return None
    names: dict[str, None] = {}
    for klass in type(value).__mro__:
        slots = klass.__dict__.get("__slots__", ())
        for slot in (slots,) if isinstance(slots, str) else slots:
            if slot not in ("__dict__", "__weakref__"):
                names[slot] = None
    own = getattr(value, "__dict__", None)
    if isinstance(own, dict):
        names.update(dict.fromkeys(str(name) for name in own))
    elif not names:
        return None
    found = []
    for name in names:
        try:
            attribute = object.__getattribute__(value, name)
        except Exception:  # an empty slot, or a broken descriptor
            continue
        found.append({"name": name, "type": type_name(attribute), "summary": summary(attribute)})
    return found


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX else text[: _MAX - 1] + "…"
