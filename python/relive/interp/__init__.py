"""What depends on the CPython version: read a live stack, rebuild it elsewhere.

Resuming a program means reading its frames (code, position, locals, value stack) out of
the interpreter and building code objects that put them back; both lean on CPython's
internals, which change with every minor version. They live here, and only here, so that
supporting a new Python means reading this folder:

    interp/__init__.py    the version flags below: the one place that asks which Python runs
    interp/stack.py       the value stack of a code object, known statically (StackLayout)
    interp/frame_state.py what a resumable point is made of (FrameState, ResumeState, ...)
    interp/read.py        live frames and generators -> FrameState (capture calls it)
    interp/rebuild.py     FrameState -> resume code, functions, generators (resume calls it;
                          loading calls its rebuild_* through pickle)
    interp/names.py       which global names code may read (a snapshot lacking one cannot resume)

``relive.capture`` and ``relive.restore`` import this package; it imports neither.
"""

from __future__ import annotations

import sys

# The interpreter's minor version, for tables measured per version.
VERSION = sys.version_info[:2]
V311 = sys.version_info < (3, 12)
V313 = sys.version_info >= (3, 13)
# sys.monitoring (PEP 669): line events without sys.settrace.
MONITORING = sys.version_info >= (3, 12)
