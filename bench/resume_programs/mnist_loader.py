"""The loop of nearly every PyTorch training script: `for batch_idx, (data, target) in
enumerate(train_loader)` over a shuffling DataLoader (synthetic MNIST-shaped data, fixed
seeds), a small model and SGD. Prints a running hash of the batches and the loss per step.

    python mnist_loader.py [epochs] [num_workers] [samples]
"""

import sys
import time
import zlib

import torch
from torch.utils.data import DataLoader, TensorDataset

epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
workers = int(sys.argv[2]) if len(sys.argv) > 2 else 0
samples = int(sys.argv[3]) if len(sys.argv) > 3 else 640

torch.manual_seed(1)
images = torch.randn(samples, 1, 28, 28)
labels = torch.randint(0, 10, (samples,))
train_loader = DataLoader(TensorDataset(images, labels), batch_size=64, shuffle=True, num_workers=workers)

model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 32), torch.nn.ReLU(),
                            torch.nn.Dropout(0.2), torch.nn.Linear(32, 10))
optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
running = 0


def train(epoch):
    global running
    model.train()
    for batch_idx, (data, target) in enumerate(train_loader):
        running = zlib.crc32(data.numpy().tobytes(), running)
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(data), target)
        loss.backward()
        optimizer.step()
        print(f"epoch {epoch} batch {batch_idx} hash {running:08x} loss {loss.item():.6f}")
        time.sleep(0.01)


for epoch in range(epochs):
    train(epoch)
print("final", f"{sum(p.sum().item() for p in model.parameters()):.6f}")
