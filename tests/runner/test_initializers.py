"""An __init__ that type.__call__ runs from C resumes: the caller calls _native.InitThen where
it called the class, which runs the rest of __init__ and returns the object. A dataclass
decorated after the snapshot keeps its fields' defaults (dataclasses.MISSING stored by name)."""

from __future__ import annotations

from conftest import Workdir
from test_resume_values import _resumes_like_python

INIT = """\
import relive
from dataclasses import dataclass, field

class Table:
    def __init__(self, n):
        self.rows = []
        for i in range(n):
            self.rows.append(i * i)
            if i == 2:
                relive.checkpoint()        # inside __init__, run by Table(...) from C
        self.size = len(self.rows)

@dataclass
class Tags:
    name: str
    seen: list = field(default_factory=list)

tables = [Table(4), Table(3)]
tags = Tags("x")
tags.seen.append(1)
print([t.size for t in tables], [t.rows for t in tables], tags, Tags("y"))
"""


def test_a_checkpoint_inside_an_init_run_by_a_class_call_resumes_like_python(work: Workdir) -> None:
    work.write("init.py", INIT)
    log = _resumes_like_python(work, "init.py")
    explicit = [e for e in log if e["trigger"] == "explicit"]
    assert [e["function"] for e in explicit] == ["__init__", "__init__"]
    assert all(e["resumable"] for e in explicit), [e.get("not_resumable_because") for e in explicit]
