"""A small PyTorch training loop with an optimizer and a scheduler; writes train.log."""

import time

import torch

torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1))
opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
sched = torch.optim.lr_scheduler.StepLR(opt, step_size=5, gamma=0.7)
X, y = torch.randn(512, 16), torch.randn(512, 1)


def train_epoch():
    perm = torch.randperm(512)
    for start in range(0, 512, 64):
        idx = perm[start:start + 64]
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(X[idx]), y[idx])
        loss.backward()
        opt.step()
        time.sleep(0.004)
    sched.step()
    return loss.item()


with open("train.log", "w") as log:
    for epoch in range(25):
        loss = train_epoch()
        log.write(f"{epoch} {loss:.6f}\n")
        print("epoch", epoch, f"{loss:.6f}", flush=True)
print("final", f"{sum(p.sum().item() for p in model.parameters()):.6f}")
