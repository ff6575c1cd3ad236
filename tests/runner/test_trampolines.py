"""C that only forwards a call resumes as a plain call does: functools.partial, a bound method
called with unpacked arguments (nn.Module.__call__ running forward), and PyTorch's profiler
wrapper around optimizer.step() (its record_function range loads closed). Where the C keeps
state of its own (isinstance() running an ABC's hook), a timer snapshot waits for the
program's next line after it, and so does one inside a forward pass that builds a graph."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import Workdir
from test_resume_values import _resumes_like_python

pytest.importorskip("torch")

CHECKPOINTS = """\
import abc, functools, relive, torch

class Sized(abc.ABC):
    @classmethod
    def __subclasshook__(cls, other):
        relive.checkpoint()                     # isinstance() runs this from C: not resumable
        return hasattr(other, "__len__") or NotImplemented

class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 4)

    def forward(self, x):
        x = torch.tanh(self.fc(x))
        relive.checkpoint()                     # run by nn.Module.__call__ -> forward_call(*args)
        return self.fc(x)

class PySGD(torch.optim.Optimizer):
    def __init__(self, params, lr):
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                p.add_(p.grad, alpha=-group["lr"])
        relive.checkpoint()                     # inside the profiler wrapper's record_function

def scaled(factor, values):
    relive.checkpoint()                         # run by a functools.partial
    return [v * factor for v in values]

torch.manual_seed(0)
net = Net()
opt = PySGD(net.parameters(), lr=0.1)
triple = functools.partial(scaled, 3)
x = torch.randn(2, 4)
for step in range(1):
    print(step, isinstance(type(f"Bag{step}", (list,), {})(), Sized), triple([step, 1]))
    with torch.no_grad():
        print("eval", f"{net(x).sum().item():.6f}")
    opt.zero_grad()
    net(x).pow(2).sum().backward()
    opt.step()
    print("trained", f"{sum(p.sum().item() for p in net.parameters()):.6f}")
"""


def test_checkpoints_inside_forwarding_calls_resume_like_python(work: Workdir) -> None:
    work.write("prog.py", CHECKPOINTS)
    log = _resumes_like_python(work, "prog.py")
    explicit = [e for e in log if e["trigger"] == "explicit"]
    where = {(e["function"], e["resumable"]) for e in explicit}
    # the forward pass under no_grad resumes; the one that builds a graph cannot
    assert where == {("__subclasshook__", False), ("scaled", True), ("forward", True), ("forward", False),
                     ("step", True)}, where
    hook = next(e for e in explicit if e["function"] == "__subclasshook__")
    assert any("inside isinstance()" in r for r in hook["not_resumable_because"]), hook
    graph = next(e for e in explicit if e["function"] == "forward" and not e["resumable"])
    assert any("autograd graph" in r for r in graph["not_resumable_because"]), graph


def test_timer_snapshots_inside_forwarding_calls_resume_like_python(work: Workdir) -> None:
    """Ticks fall in the ABC's hook, the partial, the forward pass and the optimizer's step:
    every timer snapshot can resume, and resumes to what the plain run prints."""
    program = Path(__file__).parents[2] / "bench" / "resume_programs" / "trampolines.py"
    shutil.copy(program, work.path / "trampolines.py")
    plain = work.python("trampolines.py", "30")
    assert plain.returncode == 0, plain.stderr
    captured = work.relive("run", "--every", "0.1", "--overhead", "0", "trampolines.py", "30", check=True)
    assert captured.stdout == plain.stdout
    timer = [e for e in work.log() if e["trigger"] == "timer"]
    assert len(timer) >= 3
    assert all(e["resumable"] for e in timer), [e["not_resumable_because"] for e in timer if not e["resumable"]]
    for entry in timer[::max(1, len(timer) // 3)][:3]:
        resumed = work.relive("resume", entry["id"], "--every", "0")
        assert resumed.returncode == 0, resumed.stderr
        assert resumed.stdout.strip() and plain.stdout.endswith(resumed.stdout), \
            f"resumed from {entry['function']}:{entry['line']}:\n{resumed.stdout}"
