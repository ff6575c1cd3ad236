"""Whether a store may be loaded from: loading unpickles, and unpickling runs code.

A store whose files another user owns, or that others may write to, can hold a
snapshot planted by someone else; loading a variable from it would run their code as
you. As ssh refuses such keys, relive refuses to load from such a store unless told
to trust it. Files owned by root are accepted (root could run code as you anyway).
Reading manifests and run records (``log``, ``show``, ``verify``) is only JSON and
needs no trust.
"""

from __future__ import annotations

import os
import shlex
import stat

from relive.errors import UntrustedStore

TRUST_VARIABLE = "RELIVE_TRUST_STORE"


def trusted_by_environment() -> bool:
    return os.environ.get(TRUST_VARIABLE, "").strip().lower() not in ("", "0", "no", "false")


def check_store(path: str) -> None:
    """Raise ``UntrustedStore`` if another user owns, or others may write, the store directory
    or anything in it. A path that is not a local directory has nothing to check."""
    if not os.path.isdir(path):
        return
    problem = _first_problem(path)
    if problem is None:
        return
    quoted = shlex.quote(path)
    raise UntrustedStore(
        f"refusing to load from the store {path}: {problem}, so someone else could have put code there "
        f"that loading would run as you. Fix: `chmod -R go-w {quoted}` (and `chown -R $(id -u) {quoted}`), "
        f"or trust it as it is: --trust-store (or {TRUST_VARIABLE}=1, relive.load(..., trust=True))")


def _first_problem(root: str) -> str | None:
    me = os.getuid()
    paths = [root]
    for directory, dirs, files in os.walk(root):
        paths.extend(os.path.join(directory, name) for name in [*dirs, *files])
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:  # gone meanwhile (a writer's temporary file): nothing to load
            continue
        name = os.path.relpath(path, root) if path != root else "the store directory"
        if st.st_uid not in (me, 0):
            return f"{name} is owned by uid {st.st_uid}, not by you (uid {me})"
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return f"{name} is writable by {'others' if st.st_mode & stat.S_IWOTH else 'its group'}"
    return None
