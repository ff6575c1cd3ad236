"""Following an expression across a run's snapshots: ``relive trace``, ``relive find`` and
``relive.trace``.

Each snapshot is opened lazily (``restore.load.Snapshot``): evaluating ``loss`` loads the
record of ``loss`` and nothing else, and each snapshot's loaded values are dropped once its
row is made, so that following a long run holds one snapshot's values at a time. A
snapshot where the expression fails (a name not defined yet, an exception, a damaged
record) gets an ``error`` in its row, and the trace goes on.

Rows are JSON: ``{"id", "time", "where", "value"}`` or ``{"id", "time", "where", "error"}``.
No click here: the command line (``cli.trace``, ``cli.find``) prints what this returns.
"""

from __future__ import annotations

import builtins
import importlib
import importlib.util
import math
import os
from collections.abc import Callable, Iterator
from types import CodeType
from typing import Any

from relive.errors import RefError, ReliveError
from relive.places import where_text
from relive.restore.load import Snapshot
from relive.state.describe import safe_repr
from relive.store import SnapshotInfo, Store

Row = dict[str, Any]
# What is followed: an expression's text, or a function of the Snapshot (the Python API).
Expression = str | Callable[[Snapshot], Any]

REPR_LENGTH = 200  # a value JSON cannot hold is shown by its repr, cut to this length


# -- which snapshots --


def snapshots(store: Store, run: str | None = None, span: str | None = None) -> list[SnapshotInfo]:
    """The snapshots followed, in ``relive log``'s order: those from REF to REF of ``span``
    (``A..B``, both included), else those of the run ``run`` names (an id prefix), else
    those of the latest run."""
    if span is not None:
        return _span(store, span)
    if run is not None:
        return store.run_snapshots(run_id(store, run))
    latest = store.latest_run()
    if latest is None:
        raise RefError(f"the store {store.path} holds no snapshots yet")
    return store.run_snapshots(latest)


def run_id(store: Store, prefix: str) -> str:
    """The one run whose id starts with ``prefix``."""
    runs = sorted({s.run for s in store.snapshots if s.run.startswith(prefix)})
    if len(runs) != 1:
        which = "no run" if not runs else f"{len(runs)} runs ({', '.join(runs[:3])})"
        raise RefError(f"{which} match {prefix!r} in {store.path} (see `relive log --all`)")
    return runs[0]


def _span(store: Store, span: str) -> list[SnapshotInfo]:
    first_ref, dots, last_ref = span.partition("..")
    if not dots or not first_ref or not last_ref:
        raise RefError(f"{span!r} is not a range: write REF..REF, e.g. latest~10..latest")
    first, last = store.resolve(first_ref), store.resolve(last_ref)
    # The snapshots that led to the last one: its run's, or, across a resume, those of the
    # run it resumed from too (as REF~N counts back).
    history = store.history(last)
    if first not in history:
        raise RefError(f"snapshot {first.short_id} does not come before {last.short_id} in its history "
                       "(see `relive log --graph`)")
    return history[history.index(first):]


# -- evaluating --


class _Names(dict[str, Any]):
    """The globals an expression is evaluated with: a name is looked up in the snapshot when
    first used (innermost frame's locals, then globals, as ``snap[name]``), then as a module
    the program imported (``np``) or any importable one (``math``, even when the program never
    imported it); else it is not defined. A dict, not a mapping of locals: comprehensions and
    lambdas look names up in their globals alone (on 3.11 every comprehension does)."""

    def __init__(self, snapshot: Snapshot, modules: dict[str, Any]) -> None:
        super().__init__(__builtins__=builtins)
        self._snapshot = snapshot
        self._modules = modules  # shared by every snapshot of a trace: imported once

    def __missing__(self, name: str) -> Any:
        if name in self._snapshot:
            value = self._snapshot[name]
        elif name in self._snapshot.manifest.modules:
            value = importlib.import_module(self._snapshot.manifest.modules[name])
        else:
            value = self._module(name)
        self[name] = value
        return value

    def _module(self, name: str) -> Any:
        if name not in self._modules:
            found = not hasattr(builtins, name) and _importable(name)
            self._modules[name] = importlib.import_module(name) if found else None
        if self._modules[name] is None:
            raise KeyError(name)  # then Python looks in the builtins, and raises NameError
        return self._modules[name]


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def compile_expression(text: str) -> CodeType:
    """The expression's code, or a one-line error saying what is wrong with it."""
    try:
        return compile(text, "<expression>", "eval")
    except SyntaxError as exc:
        raise ReliveError(f"{text!r} is not a Python expression ({exc.msg}): quote it for the shell, "
                          "e.g. relive trace 'model.loss.item()'") from None


class _Evaluator:
    """Evaluates one expression in snapshot after snapshot of one store."""

    def __init__(self, store: Store, expression: Expression) -> None:
        self.store = store
        self.modules: dict[str, Any] = {}
        self.value = expression if callable(expression) else self._evaluate(compile_expression(expression))
        self.evaluated = 0  # how many snapshots were opened: find --monotonic opens O(log n)

    def row(self, info: SnapshotInfo) -> tuple[Row, bool]:
        """The snapshot's row, and whether the value is true (False where it failed)."""
        self.evaluated += 1
        run = self.store.runs.get(info.run)
        row: Row = {"id": info.id, "time": info.time, "where": where_text(info.where, run.cwd if run else None)}
        snapshot = None
        try:
            # Its manifest is read here (listing read summaries): one damaged since is this row's error.
            snapshot = Snapshot(self.store, info)
            value = self.value(snapshot)
            row["value"] = json_value(value)
            true = bool(value)
        except Exception as exc:  # the trace goes on: this row says what went wrong
            row.pop("value", None)
            row["error"] = f"{type(exc).__name__}: {exc}"
            true = False
        finally:
            if snapshot is not None:
                snapshot.forget()  # a long run: hold one snapshot's values at a time
        return row, true

    def _evaluate(self, code: CodeType) -> Callable[[Snapshot], Any]:
        return lambda snapshot: eval(code, _Names(snapshot, self.modules))


def json_value(value: Any) -> Any:
    """``value`` as JSON holds it: numbers (NaN and infinities as ``"nan"``, ``"inf"``,
    ``"-inf"``, so that the JSON stays strict; NumPy and PyTorch scalars too), strings, bools,
    None, and lists of those; the repr otherwise, cut to ``REPR_LENGTH``."""
    simple = _simple(value)
    if simple is not _NOT_SIMPLE:
        return simple
    text = safe_repr(value)
    return text if len(text) <= REPR_LENGTH else text[:REPR_LENGTH - 1] + "…"


_NOT_SIMPLE = object()


def _simple(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, str):  # numpy.str_ too
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return _number(float(value))
    if isinstance(value, (list, tuple)):
        items = [_simple(item) for item in value]
        return _NOT_SIMPLE if any(item is _NOT_SIMPLE for item in items) else items
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):  # np.float32, a 0-d tensor
        try:
            item = value.item()
        except Exception:
            return _NOT_SIMPLE
        if isinstance(item, (bool, int, float, str)) or item is None:
            return _simple(item)
    return _NOT_SIMPLE


def _number(value: float) -> float | str:
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def number(value: Any) -> float | None:
    """A row's value as a float for a plot or a sparkline (NaN, ±inf included); None when it
    is not a number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if value in ("nan", "inf", "-inf"):
        return float(value)
    return None


# -- trace and find --


def rows(store: Store, expression: Expression, chosen: list[SnapshotInfo]) -> Iterator[Row]:
    """The expression's row in each of ``chosen``, one at a time."""
    store.check_loadable()  # once, here, rather than as an error in every row
    evaluator = _Evaluator(store, expression)
    for info in chosen:
        yield evaluator.row(info)[0]


def find(store: Store, expression: Expression, chosen: list[SnapshotInfo],
         monotonic: bool = False) -> tuple[Row | None, Row | None, int]:
    """The row of the first of ``chosen`` where the expression is true, the row of the one
    before it (None for either where there is none), and how many snapshots were evaluated.

    ``monotonic``: the expression, once true, stays true (a NaN loss, a growing counter), so
    a bisection finds it, evaluating about log2(n) snapshots. A failing row counts as false.
    """
    store.check_loadable()
    evaluator = _Evaluator(store, expression)
    evaluated: dict[int, tuple[Row, bool]] = {}

    def at(index: int) -> tuple[Row, bool]:
        if index not in evaluated:
            evaluated[index] = evaluator.row(chosen[index])
        return evaluated[index]

    first = _bisect(len(chosen), lambda i: at(i)[1]) if monotonic else _scan(len(chosen), lambda i: at(i)[1])
    if first is None:
        return None, None, evaluator.evaluated
    before = at(first - 1)[0] if first > 0 else None
    return at(first)[0], before, evaluator.evaluated


def _scan(n: int, true: Callable[[int], bool]) -> int | None:
    return next((i for i in range(n) if true(i)), None)


def _bisect(n: int, true: Callable[[int], bool]) -> int | None:
    """The first index where ``true`` holds, given that it holds from there on."""
    low, high = 0, n
    while low < high:
        middle = (low + high) // 2
        if true(middle):
            high = middle
        else:
            low = middle + 1
    return low if low < n else None


def trace(expression: Expression, run: str | None = None, store: str | None = None,
          trust: bool = False) -> list[Row]:
    """The value of ``expression`` in each snapshot of a run: the latest run, or the one
    ``run`` names (an id prefix). ``expression`` is Python text evaluated with the snapshot's
    names (innermost frame's locals, then globals; modules import by name), or a function
    called with each ``Snapshot``. Rows: ``{"id", "time", "where", "value"}``, or ``"error"``
    instead of ``"value"`` where it failed; ``pandas.DataFrame(rows)`` makes a table of them.
    ``store`` and ``trust`` as for ``relive.load``."""
    opened = Store(store, trust=trust or None)
    return list(rows(opened, expression, snapshots(opened, run)))
