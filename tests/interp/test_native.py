"""relive._native's frame reads: value stack, raw locals, the C boundary."""

from __future__ import annotations

import pickle
import sys

import pytest

from relive import _native
from relive.interp.stack import StackLayout


def test_null_is_one_picklable_sentinel() -> None:
    assert repr(_native.NULL) == "<NULL>"
    assert pickle.loads(pickle.dumps(_native.NULL)) is _native.NULL


def test_reads_a_for_loops_iterator_and_the_locals() -> None:
    seen = {}

    def peek(frame):
        # The frame waits in the call of peek: read only below the call's operands.
        site = StackLayout.of(frame.f_code).call_at(frame.f_lasti)
        seen["stack"] = _native.frame_stack(frame, site.base)
        seen["locals"] = _native.frame_locals_plus(frame)

    def f(a):
        b = [1, 2]
        for x in range(3):
            peek(sys._getframe())
            return x

    f(5)
    (iterator,) = seen["stack"]
    assert type(iterator).__name__ == "range_iterator"
    assert seen["locals"][:3] == (5, [1, 2], 0)


def test_unbound_locals_read_as_null() -> None:
    def f():
        frame = sys._getframe()
        values = _native.frame_locals_plus(frame)
        later = 1
        return values, later

    values, _ = f()
    assert values[-1] is _native.NULL


def test_refuses_reads_outside_the_frame() -> None:
    frame = sys._getframe()
    with pytest.raises(ValueError):
        _native.frame_stack(frame, frame.f_code.co_stacksize + 1)
    with pytest.raises(ValueError):
        _native.frame_stack(frame, -1)
    with pytest.raises(TypeError):
        _native.frame_stack(object(), 0)

    def done():
        return sys._getframe()

    with pytest.raises(ValueError, match="completed"):
        _native.frame_stack(done(), 0)


def test_tells_a_call_through_c_from_a_direct_call() -> None:
    def probe():
        return _native.frame_called_from_c(sys._getframe())

    assert probe() is False
    assert list(map(lambda _: probe(), [1])) == [False]  # the lambda is called by C, probe is not
    assert list(map(lambda _: _native.frame_called_from_c(sys._getframe()), [1])) == [True]
    assert sorted([1], key=lambda _: _native.frame_called_from_c(sys._getframe()) and 0) == [1]


def test_stacktop_of_the_current_line() -> None:
    frame = sys._getframe()
    assert isinstance(_native.frame_stacktop(frame), int)
