"""The program's recursion budget is the program's: relive spends none of it.

Under ``python script.py`` the module's first line runs one frame deep; under ``relive run``
relive's own frames lie below it (``python -m relive``, the command line, the runner). Those
frames are made free when the capture starts: the interpreter counts the program's depth as
``python`` would, so a program recursing to the last depth ``python`` allows runs, one frame
deeper fails as it fails there, and ``sys.getrecursionlimit``, ``sys.setrecursionlimit`` and
their error messages stay the real ones. relive's callbacks in the program's thread get room
of their own above the limit (``_native.unseen``).

3.12+ counts C recursion apart from Python frames; both are made free the same way.
"""

from __future__ import annotations

from relive import _native
from relive.interp import VERSION

# What ``_native.recursion_used()`` reads in a program's first frame under plain ``python``:
# the module's frame (and for ``-m``, runpy's frames and ``exec`` below it), plus the call
# of ``recursion_used`` itself. Measured per version; tests/capture/test_unseen.py checks
# that the budgets match, running plain ``python`` beside relive.
_PYTHON_FIRST_FRAME = {
    (3, 11): {"script": (2, 0), "module": (5, 0)},
    (3, 12): {"script": (1, 3), "module": (3, 6)},
    (3, 13): {"script": (1, 3), "module": (3, 6)},
}
# What the program's first frame reads under relive, less what ``spare_relive_frames``
# reads: it is called from ``Capture.start``, called from runner's ``_run_captured``, which
# then calls the boundary (``execute``), which runs the program's code.
_FIRST_FRAME_ABOVE_START = {
    (3, 11): (1, 0),
    (3, 12): (0, 3),
    (3, 13): (0, 3),
}


def spare_relive_frames(module: bool) -> tuple[int, int]:
    """Make the frames below the program free; call from ``Capture.start``. Returns what was
    spared (``give_back`` takes it back once the program has ended)."""
    python = _PYTHON_FIRST_FRAME.get(VERSION)
    above = _FIRST_FRAME_ABOVE_START.get(VERSION)
    if python is None or above is None:
        return (0, 0)
    here = _native.recursion_used()  # in Capture.start: one frame above the runner's, like this call
    base = python["module" if module else "script"]
    spared = (here[0] + above[0] - base[0], here[1] + above[1] - base[1])
    spared = (max(spared[0], 0), max(spared[1], 0))
    _native.spare_recursion(*spared)
    return spared


def give_back(spared: tuple[int, int]) -> None:
    _native.spare_recursion(-spared[0], -spared[1])
