"""A small training loop to try relive on: a two-layer network learning a synthetic task.

    relive run --every 2 examples/train.py --epochs 40
    relive log
    relive show latest

Only NumPy is needed. Each epoch sleeps a little so that there is time to interrupt it.
"""

import argparse
import time

import numpy as np

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=30)
parser.add_argument("--lr", type=float, default=0.5)
parser.add_argument("--hidden", type=int, default=64)
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()

rng = np.random.default_rng(args.seed)
X = rng.normal(size=(20_000, 20)).astype(np.float32)
true_w = rng.normal(size=(20, 1)).astype(np.float32)
y = ((X @ true_w) * (X[:, :1] + 1) > 0).astype(np.float32)


class MLP:
    def __init__(self, n_in, n_hidden):
        self.w1 = rng.normal(scale=n_in ** -0.5, size=(n_in, n_hidden)).astype(np.float32)
        self.b1 = np.zeros(n_hidden, np.float32)
        self.w2 = rng.normal(scale=n_hidden ** -0.5, size=(n_hidden, 1)).astype(np.float32)
        self.b2 = np.zeros(1, np.float32)

    def forward(self, x):
        self.h = np.tanh(x @ self.w1 + self.b1)
        return 1 / (1 + np.exp(-(self.h @ self.w2 + self.b2)))

    def step(self, x, target, lr):
        p = self.forward(x)
        grad = (p - target) / len(x)
        hidden_grad = (grad @ self.w2.T) * (1 - self.h ** 2)
        self.w2 -= lr * self.h.T @ grad
        self.b2 -= lr * grad.sum(0)
        self.w1 -= lr * x.T @ hidden_grad
        self.b1 -= lr * hidden_grad.sum(0)
        eps = 1e-7
        return float(-(target * np.log(p + eps) + (1 - target) * np.log(1 - p + eps)).mean())


def train(model, epochs, lr, batch=500):
    history = []
    for epoch in range(epochs):
        order = rng.permutation(len(X))
        losses = [model.step(X[idx], y[idx], lr) for idx in np.split(order, len(X) // batch)]
        history.append(sum(losses) / len(losses))
        accuracy = float(((model.forward(X) > 0.5) == y).mean())
        print(f"epoch {epoch + 1:3d}  loss {history[-1]:.4f}  accuracy {accuracy:.3f}", flush=True)
        time.sleep(0.2)
    return history


model = MLP(X.shape[1], args.hidden)
history = train(model, args.epochs, args.lr)
print(f"done: final loss {history[-1]:.4f}")
