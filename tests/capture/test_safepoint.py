"""LineEvents on its own: what armed line events hold on to."""

from __future__ import annotations

import weakref

from relive.capture.safepoint import LineEvents


class Box:
    pass


def test_frames_passed_over_while_armed_are_let_go() -> None:
    """Lines passed over keep the events on (no disarm between them); the frames that ran
    and returned meanwhile must not be kept (3.11's traced frames were, with their locals:
    t-SNE's temporaries made a snapshot child's private memory 21 -> 150 MB)."""
    boxes: list[weakref.ref[Box]] = []

    def make() -> None:
        box = Box()  # a local of a frame that returns
        boxes.append(weakref.ref(box))

    taken: list[object] = []
    events = LineEvents(taken.append, passes_over=lambda frame: True)
    try:
        assert events.arm()
        for _ in range(100):
            make()
        alive = sum(ref() is not None for ref in boxes)
    finally:
        events.close()
    assert not taken  # every line was passed over
    assert alive == 0, f"{alive} of 100 returned frames' locals still alive while armed"
