"""K-means on 1,000,000 blobs: scikit-learn_bench's KMeans case, as a plain script.

    python bench/workloads/kmeans.py [--scale 1.0] [--max-iter 50]

Configuration, from IntelPython/scikit-learn_bench (`configs/skl_config.json`, first kmeans
case, and `sklearn_bench/kmeans.py`):

- data: `make_blobs`, 1,000,000 samples x 20 features (float64, 160 MB), 1000 isotropic
  Gaussian blobs (generated here with `random_state=777`; the bench generates its own);
- `KMeans(n_clusters=1000, init=X[1000 random rows], n_init=1, max_iter=50, tol=0.0)`: the
  bench's "random" init picks the initial centroids with `np.random.seed(12345)` and
  `randint`, as done here; `tol=0` means all 50 iterations run unless the labels stop
  changing. A plain run (all 50 iterations) took 92 s on the shared 2-core development
  VM, so the iterations are not capped.

The bench's pandas/Fortran-order input and the Davies-Bouldin scoring are left out: the
state (X, the labels, the fitted model) is what matters for snapshots. --scale multiplies
the sample count (the clusters stay 1000); --max-iter caps the iterations.
"""

import argparse

import numpy as np
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs

parser = argparse.ArgumentParser(description="scikit-learn KMeans, scikit-learn_bench configuration")
parser.add_argument("--scale", type=float, default=1.0, help="fraction of the 1,000,000 samples")
parser.add_argument("--max-iter", type=int, default=50)
args = parser.parse_args()

n_samples = max(int(1_000_000 * args.scale), 2000)
n_clusters = 1000
X, y_true = make_blobs(n_samples=n_samples, n_features=20, centers=n_clusters, random_state=777)

np.random.seed(12345)  # the bench's seed for picking the initial centroids
X_init = X[np.random.randint(0, X.shape[0], size=n_clusters)]

kmeans = KMeans(n_clusters=n_clusters, init=X_init, n_init=1, max_iter=args.max_iter, tol=0.0)
kmeans.fit(X)
labels = kmeans.labels_

print(f"kmeans: samples={n_samples} iterations={kmeans.n_iter_} inertia={kmeans.inertia_:.6e}")
