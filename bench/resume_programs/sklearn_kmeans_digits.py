# After scikit-learn's example examples/cluster/plot_kmeans_digits.py ("A demo of K-Means
# clustering on the handwritten digits data", https://github.com/scikit-learn/scikit-learn,
# BSD 3-Clause License, Copyright (c) the scikit-learn developers), written again for relive's
# resume corpus (bench/resume_fidelity.py). As in the example: the digits data set (shipped
# with scikit-learn: no download), a pipeline of StandardScaler and KMeans, three
# initializations (k-means++ with n_init=4, random with n_init=4, and PCA components with
# n_init=1), and the example's clustering metrics. Changed: each initialization runs for
# random_state 0, 1 and 2 (the example: 0); no timings in the output (not deterministic) and no
# plot of the reduced data.
from sklearn import metrics
from sklearn.cluster import KMeans
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

data, labels = load_digits(return_X_y=True)
(n_samples, n_features), n_digits = data.shape, len(set(labels))
print(f"# digits: {n_digits}; # samples: {n_samples}; # features {n_features}")


def bench_k_means(kmeans, name, data, labels):
    """Fit kmeans on data and print its inertia and the example's metrics."""
    estimator = make_pipeline(StandardScaler(), kmeans).fit(data)
    results = [name, estimator[-1].inertia_]
    clustering_metrics = [
        metrics.homogeneity_score,
        metrics.completeness_score,
        metrics.v_measure_score,
        metrics.adjusted_rand_score,
        metrics.adjusted_mutual_info_score,
    ]
    results += [m(labels, estimator[-1].labels_) for m in clustering_metrics]
    results += [metrics.silhouette_score(data, estimator[-1].labels_,
                                         metric="euclidean", sample_size=300,
                                         random_state=0)]
    formatter_result = "{:9s}\t{:.0f}\t{:.3f}\t{:.3f}\t{:.3f}\t{:.3f}\t{:.3f}\t{:.3f}"
    print(formatter_result.format(*results))
    return results


print("init\t\tinertia\thomo\tcompl\tv-meas\tARI\tAMI\tsilhouette")
total = 0.0
for seed in (0, 1, 2):
    kmeans = KMeans(init="k-means++", n_clusters=n_digits, n_init=4, random_state=seed)
    total += bench_k_means(kmeans=kmeans, name=f"k-means++{seed}", data=data, labels=labels)[1]
    kmeans = KMeans(init="random", n_clusters=n_digits, n_init=4, random_state=seed)
    total += bench_k_means(kmeans=kmeans, name=f"random{seed}", data=data, labels=labels)[1]
    pca = PCA(n_components=n_digits, random_state=seed).fit(data)
    kmeans = KMeans(init=pca.components_, n_clusters=n_digits, n_init=1)
    total += bench_k_means(kmeans=kmeans, name=f"PCA-based{seed}", data=data, labels=labels)[1]
print(f"final inertia sum {total:.3f}")
