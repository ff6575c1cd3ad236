"""A CNN trained on MNIST-like digits: pytorch/examples `mnist/main.py`, as a plain script.

    python bench/workloads/mnist.py [--scale 1.0] [--epochs 1]

As in the example: the network (two 3x3 convolutions of 32 and 64 channels, max-pool,
dropout 0.25, a 9216-128 linear layer, dropout 0.5, a 128-10 linear layer, log-softmax),
NLL loss, Adadelta (lr 1.0), StepLR (step 1, gamma 0.7), batches of 64 (1000 for the
test), inputs normalized with MNIST's mean and deviation, `torch.manual_seed(1)`, the
`train`/`test` functions called once per epoch.

Not as in the example. No download: 60,000 training and 10,000 test images are synthetic
digits (28x28, 0-255 as uint8, ten classes of blurred strokes, each image shifted, scaled
and noised), generated from a seed; the labels can be learned from them. The example runs
14 epochs; one epoch of 60,000 images already took 166 s on the shared 2-core development
VM, so the default here is --epochs 1. --scale multiplies both image counts. The loop runs at
module level, so the model, optimizer and data are global variables, as in many scripts.
"""

import argparse

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.optim.lr_scheduler import StepLR
from torch.utils.data import DataLoader, TensorDataset


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.max_pool2d(x, 2)
        x = self.dropout1(x)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = self.dropout2(x)
        return F.log_softmax(self.fc2(x), dim=1)


def train(model, train_loader, optimizer, epoch, log_interval=100):
    model.train()
    for batch_idx, (data, target) in enumerate(train_loader):
        optimizer.zero_grad()
        loss = F.nll_loss(model(data), target)
        loss.backward()
        optimizer.step()
        if batch_idx % log_interval == 0:
            print(f"Train Epoch: {epoch} [{batch_idx * len(data)}/{len(train_loader.dataset)}]\tLoss: {loss.item():.6f}")


def test(model, test_loader):
    model.eval()
    test_loss, correct = 0.0, 0
    with torch.no_grad():
        for data, target in test_loader:
            output = model(data)
            test_loss += F.nll_loss(output, target, reduction="sum").item()
            correct += (output.argmax(dim=1) == target).sum().item()
    n = len(test_loader.dataset)
    return test_loss / n, correct / n


def synthetic_digits(n, seed):
    """n 28x28 uint8 images in ten classes told apart by where their strokes are, and the labels."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:28, 0:28]
    templates = np.zeros((10, 28, 28), dtype=np.float32)
    shapes = np.random.default_rng(0)  # the same ten classes for training and test
    for c in range(10):
        for _ in range(3):  # three short strokes of blurred dots per class
            start, end = shapes.uniform(6, 22, 2), shapes.uniform(6, 22, 2)
            for t in np.linspace(0, 1, 8):
                cy, cx = start + t * (end - start)
                templates[c] += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 3.0)
    templates /= templates.max(axis=(1, 2), keepdims=True)
    labels = rng.integers(0, 10, n)
    images = np.empty((n, 28, 28), dtype=np.float32)
    shifts = rng.integers(-4, 5, (n, 2))
    for dy in range(-4, 5):  # shift by group: one np.roll per offset, not per image
        for dx in range(-4, 5):
            rows = np.flatnonzero((shifts[:, 0] == dy) & (shifts[:, 1] == dx))
            images[rows] = np.roll(templates[labels[rows]], (dy, dx), axis=(1, 2))
    images *= rng.uniform(0.6, 1.0, (n, 1, 1)).astype(np.float32)
    images += rng.normal(0, 0.4, images.shape).astype(np.float32)
    return np.clip(images * 255, 0, 255).round().astype(np.uint8)[:, None], labels


def as_dataset(images, labels):
    x = (torch.from_numpy(images).float() / 255 - 0.1307) / 0.3081  # the example's Normalize
    return TensorDataset(x, torch.from_numpy(labels))


parser = argparse.ArgumentParser(description="pytorch/examples MNIST CNN on synthetic digits")
parser.add_argument("--scale", type=float, default=1.0, help="fraction of the 60,000/10,000 images")
parser.add_argument("--epochs", type=int, default=1)
args = parser.parse_args()

torch.manual_seed(1)
np.random.seed(1)
train_images, train_labels = synthetic_digits(max(int(60_000 * args.scale), 640), seed=1)
test_images, test_labels = synthetic_digits(max(int(10_000 * args.scale), 1000), seed=2)
train_loader = DataLoader(as_dataset(train_images, train_labels), batch_size=64, shuffle=True)
test_loader = DataLoader(as_dataset(test_images, test_labels), batch_size=1000)

model = Net()
optimizer = torch.optim.Adadelta(model.parameters(), lr=1.0)
scheduler = StepLR(optimizer, step_size=1, gamma=0.7)
history = []
for epoch in range(1, args.epochs + 1):
    train(model, train_loader, optimizer, epoch)
    history.append(test(model, test_loader))
    print(f"Test set: epoch {epoch}, average loss {history[-1][0]:.4f}, accuracy {history[-1][1]:.2%}")
    scheduler.step()

print(f"mnist: train={len(train_images)} epochs={args.epochs} test_loss={history[-1][0]:.4f} "
      f"accuracy={history[-1][1]:.4f}")
