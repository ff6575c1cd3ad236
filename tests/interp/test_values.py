"""Values that live on a program's stacks pickle for resuming: generators, exceptions,
iterators of builtins."""

from __future__ import annotations

import io
import pickle
import sys
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from relive.errors import NotResumable
from relive.interp.read import reduce_for_resume


class Pickler(cloudpickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        reduced = reduce_for_resume(obj)
        return reduced if reduced is not NotImplemented else super().reducer_override(obj)


def round_trip(value: Any) -> Any:
    out = io.BytesIO()
    Pickler(out, protocol=5).dump(value)
    return pickle.loads(out.getvalue())


def counter(items, scale):
    total = 0
    for item in items:
        total += item * scale
        received = yield total
        if received:
            total += received


def test_a_suspended_generator_goes_on_where_it_stood() -> None:
    gen = counter([1, 2, 3, 4], 10)
    assert next(gen) == 10
    assert gen.send(5) == 35
    copy = round_trip(gen)
    assert list(copy) == list(gen) == [65, 105]


def test_generators_not_started_and_finished() -> None:
    fresh = round_trip(counter([1, 2], 1))
    assert list(fresh) == [1, 3]
    done = counter([], 1)
    list(done)
    assert list(round_trip(done)) == []


def test_a_generator_shared_by_two_names_stays_one() -> None:
    gen = counter([1, 2, 3], 1)
    next(gen)
    a, b = round_trip([gen, gen])
    assert a is b and next(a) == 3


def test_generator_expressions_and_nested_generators() -> None:
    inner = (x * x for x in range(5))
    next(inner)
    outer = (y + 1 for y in inner)
    next(outer)
    assert list(round_trip(outer)) == [5, 10, 17]


def test_a_running_generator_is_refused() -> None:
    def selfish():
        yield round_trip(me)

    me = selfish()
    with pytest.raises(NotResumable, match="running"):
        next(me)


def test_a_generator_suspended_in_an_except_block_is_refused() -> None:
    def handler():
        try:
            raise ValueError
        except ValueError:
            yield 1

    gen = handler()
    next(gen)
    with pytest.raises(NotResumable, match="except"):
        round_trip(gen)


class Problem(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def test_exceptions_keep_their_chain_and_get_a_traceback() -> None:
    try:
        try:
            raise KeyError("k")
        except KeyError as exc:
            raise Problem("bad", 3) from exc
    except Problem as exc:
        err = exc
    copy = round_trip(err)
    assert type(copy) is Problem and copy.args == ("bad",) and copy.code == 3
    assert type(copy.__cause__) is KeyError and copy.__suppress_context__
    assert copy.__traceback__ is not None


@pytest.mark.parametrize("make", [
    lambda: iter(range(10)),
    lambda: iter([1, 2, 3, 4, 5, 6]),
    lambda: iter((1, 2, 3, 4, 5, 6)),
    lambda: iter({"a": 1, "b": 2, "c": 3, "d": 4}),
    lambda: iter({"a": 1, "b": 2, "c": 3, "d": 4}.items()),
    lambda: enumerate("abcdef"),
    lambda: zip("abcdef", range(6)),
    lambda: reversed([1, 2, 3, 4]),
    lambda: map(str, [1, 2, 3, 4]),
    lambda: iter("abcdef"),
])
def test_iterators_of_builtins_pickle_at_their_position(make: Any) -> None:
    it = make()
    next(it)
    assert list(round_trip(it)) == list(it)


def test_a_generator_suspended_in_yield_from() -> None:
    def inner(n):
        for i in range(n):
            yield i
        return "done"

    def outer():
        result = yield from inner(3)
        yield result

    gen = outer()
    assert [next(gen), next(gen)] == [0, 1]
    assert list(round_trip(gen)) == list(gen) == [2, "done"]


def test_frames_of_another_thread_are_not_read() -> None:
    import threading

    from relive.interp.read import capture

    seen = {}

    def other() -> None:
        seen["state"] = capture([main])

    main = sys._getframe()
    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    state = seen["state"]
    assert not state.resumable and "thread" in state.reasons[0]
