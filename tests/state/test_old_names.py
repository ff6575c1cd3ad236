"""Records written before relive's modules moved still load: their pickles name the old places.

A suspended generator on a program's stack is stored as ``rebuild_generator(GeneratorState(
FrameState(...)))``, an exception as ``rebuild_exception(...)``: pickle names them by module
and name. Until issue 11 they lived in ``relive.state.resumable``; the records here are
written naming that module, as stores written then do, and loaded through relive's loader.
"""

from __future__ import annotations

import io
import pickle
import types
from typing import Any

import pytest

from relive.interp.read import reduce_for_resume
from relive.state import pickler

_OLD_NAMES = {new: old for old, new in pickler.RENAMED.items()}


class OldNamesPickler(pickle._Pickler):  # type: ignore[name-defined,misc]  # pure Python: save_global can be overridden
    """Pickles as relive's capture does, naming relive's moved functions and classes where
    they were before they moved."""

    def reducer_override(self, obj: Any) -> Any:
        return reduce_for_resume(obj)

    def save_global(self, obj: Any, name: str | None = None) -> None:
        old = _OLD_NAMES.get((getattr(obj, "__module__", None), name or getattr(obj, "__qualname__", None)))
        if old is None:
            super().save_global(obj, name)
            return
        self.save(old[0])
        self.save(old[1])
        self.write(pickle.STACK_GLOBAL)
        self.memoize(obj)

    # Functions go to the base class's save_global through the dispatch table.
    dispatch = {**pickle._Pickler.dispatch, types.FunctionType: save_global}  # type: ignore[attr-defined]


def old_record(value: Any) -> bytes:
    out = io.BytesIO()
    OldNamesPickler(out, protocol=5).dump(value)
    return out.getvalue()


def load(payload: bytes) -> Any:
    context = pickler.LoadContext({}, lambda name: pytest.fail(f"no global {name} in this record"))
    return pickler.loads(payload, [], context)


def counter(items: list[int], scale: int) -> Any:
    total = 0
    for item in items:
        total += item * scale
        received = yield total
        if received:
            total += received


class Refused(Exception):
    def __init__(self, what: str, code: int) -> None:
        super().__init__(f"{what} refused")
        self.code = code


def test_every_old_name_is_in_the_record() -> None:
    gen = counter([1, 2, 3], 1)
    next(gen)
    payload = old_record([gen, Refused("x", 7)])
    for (module, name) in [old for old in pickler.RENAMED if old[0] == "relive.state.resumable"]:
        assert module.encode() in payload and name.encode() in payload
    for module in ("relive.interp.frame_state", "relive.interp.rebuild"):
        assert module.encode() not in payload
    with pytest.raises(ModuleNotFoundError):  # without the table, such a record no longer loads
        pickle.loads(payload)


def test_a_generator_stored_under_the_old_names_goes_on_where_it_stood() -> None:
    gen = counter([1, 2, 3, 4], 10)
    assert next(gen) == 10
    assert gen.send(5) == 35
    copy = load(old_record(gen))
    assert list(copy) == list(gen) == [65, 105]


def test_generators_not_started_and_finished_under_the_old_names() -> None:
    assert list(load(old_record(counter([1, 2], 1)))) == [1, 3]
    done = counter([], 1)
    list(done)
    assert list(load(old_record(done))) == []


def test_an_exception_stored_under_the_old_names_loads_as_it_was() -> None:
    try:
        try:
            raise KeyError("inner")
        except KeyError:
            raise Refused("payment", 402)
    except Refused as exc:
        stored = exc
    loaded = load(old_record(stored))
    assert type(loaded) is Refused and loaded.args == ("payment refused",) and loaded.code == 402
    assert isinstance(loaded.__context__, KeyError) and loaded.__traceback__ is not None


def test_a_tensor_stored_before_the_torch_reducers_moved_still_loads() -> None:
    """Tensors were stored as ``relive.state.pickler.rebuild_tensor(...)`` until issue 11
    gathered PyTorch's knowledge into ``relive.state.torch``."""
    torch = pytest.importorskip("torch")
    from relive.state import torch as torch_state

    class OldTorchNames(OldNamesPickler):
        def reducer_override(self, obj: Any) -> Any:
            reduce = torch_state.reducers().get(type(obj))
            return reduce(obj, {}) if reduce is not None else NotImplemented

    weights = torch.nn.Parameter(torch.arange(6.0).reshape(2, 3))
    out = io.BytesIO()
    OldTorchNames(out, protocol=5).dump({"w": weights, "view": weights.detach()[1]})
    payload = out.getvalue()
    assert b"relive.state.pickler" in payload and b"relive.state.torch" not in payload
    loaded = load(payload)
    assert isinstance(loaded["w"], torch.nn.Parameter) and torch.equal(loaded["w"], weights)
    assert torch.equal(loaded["view"], weights.detach()[1])
