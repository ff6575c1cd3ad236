"""relive's own: a program that spends its time inside what C calls for it — isinstance()
with an ABC, functools.partial, a forward pass through nn.Module.__call__, and
optimizer.step() inside PyTorch's profiler wrapper."""

import abc
import functools
import sys

import torch


class Sized(abc.ABC):
    @classmethod
    def __subclasshook__(cls, other):
        total = 0
        for i in range(80000):      # a slow hook: time spent under isinstance()
            total += i % 7
        return hasattr(other, "__len__") or NotImplemented


class Slow(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(8, 8)

    def forward(self, x):
        for _ in range(100):        # Python work inside the forward pass
            x = torch.tanh(self.fc(x))
        return x


class PySGD(torch.optim.Optimizer):
    def __init__(self, params, lr):
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                for _ in range(1500):  # Python work inside the profiler wrapper
                    p.add_(p.grad, alpha=-group["lr"] / 1500)


def scaled(factor, values):
    out = []
    for v in values:
        out.append(v * factor)
    return out


torch.manual_seed(0)
model = Slow()
opt = PySGD(model.parameters(), lr=0.01)
triple = functools.partial(scaled, 3)
x = torch.randn(4, 8)
for step in range(int(sys.argv[1]) if len(sys.argv) > 1 else 80):
    fresh = [type(f"Bag{step}", (list,), {})(), type(f"Num{step}", (int,), {})()]  # new classes: no cached answer
    kinds = [type(v).__name__ for v in fresh if isinstance(v, Sized)]
    values = triple(range(150000))
    opt.zero_grad()
    loss = model(x).pow(2).sum()
    loss.backward()
    opt.step()
    print(step, kinds, sum(values), f"{loss.item():.6e}")
print("final", f"{sum(p.sum().item() for p in model.parameters()):.6f}")
