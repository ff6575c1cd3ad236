"""relive in IPython and Jupyter: ``%load_ext relive`` snapshots the namespace after every cell.

``load`` (IPython calls it through ``relive.load_ipython_extension``) starts a
``session.Session`` for this kernel, hooks it to IPython's ``pre_run_cell`` and
``post_run_cell`` events and adds the ``%relive`` magic (``magics``: log, undo, checkout,
restore, store; ``checkout`` puts a snapshot back in place). ``unload`` stops all of it.
Snapshots go to the store ``relive run`` writes (``.relive`` in the kernel's working
directory, or ``$RELIVE_STORE``), so the command line reads them too.
"""

from __future__ import annotations

import atexit
from typing import Any

from relive.notebook.magics import Commands
from relive.notebook.session import Session, default_store
from relive.report import warn

_session: Session | None = None  # this kernel's, while the extension is loaded


def load(ip: Any) -> None:
    global _session
    if _session is not None:
        return  # loaded already: %load_ext twice must not snapshot twice
    try:
        session = Session(ip, default_store())
        ip.events.register("pre_run_cell", session.before_cell)
        ip.events.register("post_run_cell", session.after_cell)
        atexit.register(_settle_at_exit, session)  # a kernel shut down right after a cell
        ip.register_magic_function(Commands(session), magic_kind="line", magic_name="relive")
    except Exception as exc:
        warn(f"could not start: {exc}; no snapshots will be taken")
        return
    _session = session


def _settle_at_exit(session: Session) -> None:
    """The last cell's snapshot committed (and its warnings said) before the kernel goes."""
    try:
        session.settle()
    except BaseException as exc:  # never a traceback of relive's at the kernel's exit
        warn(f"the last cell's snapshot could not be settled: {exc}")


def unload(ip: Any) -> None:
    global _session
    session, _session = _session, None
    if session is None:
        return
    atexit.unregister(_settle_at_exit)
    _settle_at_exit(session)
    for event, callback in (("pre_run_cell", session.before_cell), ("post_run_cell", session.after_cell)):
        try:
            ip.events.unregister(event, callback)
        except ValueError:  # not registered (any more)
            pass
    ip.magics_manager.magics["line"].pop("relive", None)
