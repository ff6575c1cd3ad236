"""The error ``python script.py`` itself reports for a script that does not compile.

relive compiles the script from its bytes (``compile``), and for most errors that gives
Python's own exception. Not for all: ``python`` reads the file through its file
tokenizer, whose reports of NUL bytes, undecodable bytes and unknown encodings differ from
``compile``'s (and differ between versions). So when ``compile`` fails, the file is handed
to the interpreter's own file runner, ``PyRun_FileExFlags``, which parses it exactly as
``python script.py`` does; an audit hook stops it at the ``exec`` event that would run the
compiled module, so nothing of the program runs even if the file compiles by now.
"""

from __future__ import annotations

import os
import sys
import types

_PY_FILE_INPUT = 257  # Py_file_input: parse as a module, as for `python script.py`


class _Compiled(BaseException):
    """The file compiled after all: stopped before the program's first line."""

    # Not a ReliveError, on purpose: not an error but a private signal from the audit hook
    # to python_error below, through the interpreter's file runner; it never leaves this module.


def python_error(path: str) -> BaseException | None:
    """The exception Python raises compiling the file at ``path`` (absolute), without a
    traceback; None when it compiles, or when the interpreter's file runner is out of reach."""
    try:
        import ctypes
    except ImportError:
        return None
    encoded = os.fsencode(path)

    def stop_before_running(event: str, args: tuple[object, ...]) -> None:
        if event == "exec" and isinstance(args[0], types.CodeType) and args[0].co_filename == path:
            raise _Compiled

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fopen = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p)(("fopen", libc))
        run_file = ctypes.PYFUNCTYPE(ctypes.py_object, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int,
                                     ctypes.py_object, ctypes.py_object, ctypes.c_int,
                                     ctypes.c_void_p)(("PyRun_FileExFlags", ctypes.pythonapi))
    except (AttributeError, OSError):  # not in this interpreter's symbols
        return None
    file = fopen(encoded, b"rb")
    if not file:
        return None
    sys.addaudithook(stop_before_running)  # for good: the process ends with this error
    namespace: dict[str, object] = {}
    try:
        run_file(file, encoded, _PY_FILE_INPUT, namespace, namespace, 1, None)  # 1: it closes the file
    except _Compiled:
        return None
    except Exception as exc:  # the parser's own error: what python reports
        return exc.with_traceback(None)
    return None
