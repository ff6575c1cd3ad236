"""Which names of a kernel's namespace are the notebook's variables, and which IPython's own.

IPython keeps its history (``In``, ``Out``, ``_``, ``_i3``, ``_3``), its helpers
(``exit``, ``get_ipython``, ipykernel's ``open``) and ``__builtins__`` in the same dict
as the user's variables (``ip.user_ns``, which is ``__main__.__dict__``). A snapshot
leaves them out: they are not the notebook's state, and restoring them would overwrite
the new kernel's own.
"""

from __future__ import annotations

import re
from typing import Any

# IPython's history, by name: it re-adds these after every cell.
_HISTORY = {"In", "Out", "_", "__", "___", "_i", "_ii", "_iii", "_oh", "_ih", "_dh", "exit", "quit",
            "get_ipython"}
_NUMBERED = re.compile(r"_i?\d+")  # _i3 (cell 3's source), _3 (its output)


def is_ipython_name(ip: Any, name: str) -> bool:
    """Whether ``name`` in the kernel's namespace is IPython's rather than the notebook's.

    ``user_ns_hidden`` lists what IPython put there itself; a name the user rebound
    (``open = ...``) is the user's again, as IPython's ``%who`` sees it.
    """
    if name in _HISTORY or _NUMBERED.fullmatch(name) or (name.startswith("__") and name.endswith("__")):
        return True
    hidden = ip.user_ns_hidden
    return name in hidden and hidden[name] is ip.user_ns.get(name, object())


def ipython_names(ip: Any) -> tuple[str, ...]:
    """IPython's own names in the namespace now: what a snapshot excludes (as exact names:
    identifiers hold no glob characters)."""
    return tuple(name for name in list(ip.user_ns) if is_ipython_name(ip, name))


def notebook_names(ip: Any) -> list[str]:
    """The notebook's own variables (modules included)."""
    return [name for name in list(ip.user_ns) if not is_ipython_name(ip, name)]
