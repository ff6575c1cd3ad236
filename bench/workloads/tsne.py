"""t-SNE of MNIST-like digits: scikit-learn_bench's TSNE case, as a plain script, scaled down.

    python bench/workloads/tsne.py [--scale 1.0]

Configuration, from IntelPython/scikit-learn_bench (`configs/sklearn/performance/tsne.json`
and `sklearn_bench/tsne.py`): MNIST's training images (60,000 x 784, float64) and
`TSNE(n_components=2, early_exaggeration=12.0, learning_rate=200.0, angle=0.5,
min_grad_norm=1e-7, random_state=1234)`, everything else scikit-learn's default
(Barnes-Hut, perplexity 30, 1000 iterations).

Two changes. No download: the images are synthetic digits (ten classes of blurred strokes,
each image shifted, scaled and noised; 0-255 values), generated from a seed. And the size:
Barnes-Hut t-SNE on 60,000 points takes far too long on a 2-core machine, so --scale 1.0
means 12,000 images, one fifth of MNIST (a plain run took 157 s on the shared 2-core
development VM; 6,000 took 29 s); --scale multiplies that.
"""

import argparse

import numpy as np
from sklearn.manifold import TSNE

FULL = 12_000  # a fifth of MNIST's 60,000 training images


def synthetic_digits(n, seed=0):
    """n 28x28 images (flattened, 0-255 float) in ten classes told apart by where their strokes are."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:28, 0:28]
    templates = np.zeros((10, 28, 28))
    for c in range(10):
        for _ in range(3):  # three short strokes of blurred dots per class
            start, end = rng.uniform(6, 22, 2), rng.uniform(6, 22, 2)
            for t in np.linspace(0, 1, 8):
                cy, cx = start + t * (end - start)
                templates[c] += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 3.0)
    templates /= templates.max(axis=(1, 2), keepdims=True)
    labels = rng.integers(0, 10, n)
    images = np.empty((n, 28, 28))
    shifts = rng.integers(-2, 3, (n, 2))
    for dy in range(-2, 3):  # shift by group: one np.roll per offset, not per image
        for dx in range(-2, 3):
            rows = np.flatnonzero((shifts[:, 0] == dy) & (shifts[:, 1] == dx))
            images[rows] = np.roll(templates[labels[rows]], (dy, dx), axis=(1, 2))
    images *= rng.uniform(0.6, 1.0, (n, 1, 1))
    images += rng.normal(0, 0.08, images.shape)
    return np.clip(images * 255, 0, 255).round().reshape(n, 784), labels


parser = argparse.ArgumentParser(description="scikit-learn t-SNE, scikit-learn_bench configuration")
parser.add_argument("--scale", type=float, default=1.0, help=f"fraction of {FULL} images")
args = parser.parse_args()

n_samples = max(int(FULL * args.scale), 200)
X, y = synthetic_digits(n_samples)

tsne = TSNE(n_components=2, early_exaggeration=12.0, learning_rate=200.0, angle=0.5,
            min_grad_norm=1e-7, random_state=1234)
embedding = tsne.fit_transform(X)

print(f"tsne: samples={n_samples} iterations={tsne.n_iter_} kl_divergence={tsne.kl_divergence_:.4f}")
