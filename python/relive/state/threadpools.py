"""threadpoolctl's controllers and limits (scikit-learn's thread limits): stored as what they
do, rebuilt by doing it again in the resumed process.

scikit-learn runs KMeans' Lloyd loop (and other fits) inside ``with controller.limit(limits=1,
user_api="blas")``. The ``ThreadpoolController`` (the thread pools of the native libraries
the process has loaded) and the limiter whose ``__exit__`` waits on the stack reach those
libraries through ctypes function pointers, which pickle refuses: no snapshot taken inside
such a fit could resume. relive stores a controller as nothing (a new one finds the resumed
process's own libraries) and a limiter as its limits and the thread counts its exit puts
back. Rebuilt, a limiter sets its limits again, since the resumed program runs on inside its
``with``, and counts itself entered, as its ``__enter__`` did (a limiter a snapshot holds is
one the program entered, but for one made as a plain call, ``threadpool_limits(1)``, whose
extra count only keeps OpenBLAS's controlling thread until the next limit is set).

Who calls what: the pickler (``state.pickler``) looks ``reducers()`` up by type; loading calls
the ``rebuild_*`` functions named in the records.
"""

from __future__ import annotations

import importlib
import sys
import threading
from typing import Any

from relive.state import Reducer


def reducers() -> dict[type, Reducer]:
    """The reducers of threadpoolctl's types, by exact type; empty until the program imports it
    (relive never imports it itself)."""
    module = sys.modules.get("threadpoolctl")
    controller = getattr(module, "ThreadpoolController", None)
    limiter = getattr(module, "_ThreadpoolLimiter", None)
    if not isinstance(controller, type) or not isinstance(limiter, type):
        return {}  # not imported, halfway through its import, or a version without these
    found: dict[type, Reducer] = {controller: reduce_controller, limiter: reduce_limiter}
    for name, reduce in (("threadpool_limits", reduce_limiter), ("_ThreadpoolLimiterDecorator", reduce_decorator)):
        cls = getattr(module, name, None)
        if isinstance(cls, type):
            found[cls] = reduce
    return found


def reduce_controller(controller: Any, storages: dict[int, Any]) -> Any:
    return (rebuild_controller, (type(controller),))


def reduce_limiter(limiter: Any, storages: dict[int, Any]) -> Any:
    return (rebuild_limiter, (type(limiter), limiter._controller, limiter._limits, limiter._user_api,
                              limiter._original_info))


def reduce_decorator(decorator: Any, storages: dict[int, Any]) -> Any:
    # The limiters it entered, per thread: the snapshot's (the main thread's) only.
    entered = list(getattr(decorator._limiters, "stack", []))
    return (rebuild_decorator, (type(decorator), decorator._controller, decorator._limits, decorator._user_api,
                                entered))


def rebuild_controller(cls: Any) -> Any:
    return cls()


def rebuild_limiter(cls: Any, controller: Any, limits: dict[str, Any] | None, user_api: list[str],
                    original_info: list[dict[str, Any]]) -> Any:
    limiter = cls.__new__(cls)
    limiter._controller, limiter._limits, limiter._user_api = controller, limits, user_api
    # What its exit puts back, per library of the new controller (its order follows the
    # libraries' load order, which may differ here): the same library's, else as it is now.
    limiter._original_info = [_original(lib, original_info) for lib in controller.lib_controllers]
    limiter._set_threadpool_limits()
    ownership = getattr(importlib.import_module("threadpoolctl"), "CONTROLLING_THREAD_OWNERSHIP", None)
    if ownership is not None:
        ownership.increment()
    return limiter


def rebuild_decorator(cls: Any, controller: Any, limits: Any, user_api: Any, entered: list[Any]) -> Any:
    decorator = cls.__new__(cls)
    decorator._controller, decorator._limits, decorator._user_api = controller, limits, user_api
    decorator._limiters = threading.local()
    decorator._limiters.stack = entered
    return decorator


def _original(lib: Any, original_info: list[dict[str, Any]]) -> dict[str, Any]:
    for key in ("filepath", "prefix"):
        for info in original_info:
            if info.get(key) is not None and info.get(key) == getattr(lib, key, None) \
                    and info.get("user_api") == lib.user_api:
                return info
    now: dict[str, Any] = lib.info()
    return now
