"""A point where a backward() may still run through an autograd graph cannot resume (the
graph is not stored): relive says so, and a timer snapshot looks further for one that can."""

from __future__ import annotations

import pytest

import relive

from conftest import Workdir
from relive.state.torch import pending_graph_names

torch = pytest.importorskip("torch")


def test_a_graph_is_pending_until_backward_frees_it():
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    out = model(torch.randn(8, 4))
    loss = ((out - 1) ** 2).mean()
    scope = {"out": out, "loss": loss, "weight": model[0].weight, "plain": torch.ones(3),
             "outputs": {"loss": loss}, "number": 3}
    assert pending_graph_names([("step()", scope)]) == ["`out` (in step())", "`loss` (in step())",
                                                        "`outputs` (in step())"]
    loss.backward()
    assert pending_graph_names([("step()", scope)]) == []


def test_a_tensor_of_a_graph_loads_without_requires_grad(work: Workdir):
    """Without the graph, a backward() through it must raise, not skip the parameters."""
    work.write("prog.py", """
        import relive, torch
        w = torch.nn.Parameter(torch.ones(3))
        y = (w * 2).sum()
        relive.checkpoint()
    """)
    work.relive("run", "prog.py", check=True)
    explicit = [s for s in work.log() if s["trigger"] == "explicit"][0]
    snap = relive.load(explicit["id"], store=str(work.store))
    y, w = snap["y"], snap["w"]
    assert (y.requires_grad, y.grad_fn, w.requires_grad, float(y)) == (False, None, True, 6.0)
    # The point itself cannot resume: the graph of `y` was pending.
    assert not explicit["resumable"]
    assert "`y` (in the module)" in " ".join(explicit["not_resumable_because"])


def test_timer_snapshots_avoid_the_forward_to_backward_window(work: Workdir):
    work.write("train.py", """
        import time, torch
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 1)
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        x = torch.randn(16, 4)
        for step in range(40):
            opt.zero_grad()
            loss = model(x).pow(2).mean()
            time.sleep(0.02)            # line 10: the graph is pending
            loss.backward()             # line 11: still pending
            opt.step()
            time.sleep(0.02)
        print(f"{model.weight.sum().item():.6f}")
    """)
    work.relive("run", "--every", "0.03", "--overhead", "0", "train.py", check=True)
    timers = [s for s in work.log() if s["trigger"] == "timer"]
    assert len(timers) >= 3
    assert all(s["resumable"] for s in timers), [s["not_resumable_because"] for s in timers]
    assert not {s["line"] for s in timers} & {10, 11}


def test_timer_snapshots_are_taken_outside_a_models_forward(work: Workdir):
    """A model's forward holds the batch's activations in its locals (gone once it returns):
    a timer snapshot takes a line of its caller instead, where one comes within its look."""
    work.write("evaluate.py", """
        import time, torch

        class Net(torch.nn.Module):
            def forward(self, x):
                hidden = torch.ones(1 << 21) * x.sum()   # 8 MB of activations
                time.sleep(0.03)
                return hidden.mean()

        net = Net()
        with torch.no_grad():
            for step in range(60):
                out = net(torch.ones(4))
                time.sleep(0.005)
        print(f"{float(out):.1f}")
    """)
    run = work.relive("run", "--every", "0.2", "--overhead", "0", "evaluate.py", check=True)
    assert run.stdout == "4.0\n"
    timers = [s for s in work.log() if s["trigger"] == "timer"]
    assert len(timers) >= 4
    assert all(s["function"] != "forward" for s in timers), [s["function"] for s in timers]
    assert max(s["state_bytes"] for s in timers) < 4 << 20  # no activations stored
