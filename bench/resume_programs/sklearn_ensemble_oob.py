# After scikit-learn's example examples/ensemble/plot_ensemble_oob.py ("OOB Errors for Random
# Forests", https://github.com/scikit-learn/scikit-learn, BSD 3-Clause License, Copyright (c)
# the scikit-learn developers), written again for relive's resume corpus
# (bench/resume_fidelity.py). As in the example: make_classification(500 samples, 25 features,
# 15 informative, one cluster per class, random_state 123), three RandomForestClassifiers with
# warm_start=True, oob_score=True and max_features "sqrt", "log2" and None, grown a few trees
# at a time, the OOB error recorded after each fit. Changed: trees from 15 to 75 in steps of 5
# (the example: to 150, step 5), each error printed instead of plotted (no matplotlib), and a
# final line summing them.
from collections import OrderedDict

from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier

RANDOM_STATE = 123

X, y = make_classification(
    n_samples=500,
    n_features=25,
    n_clusters_per_class=1,
    n_informative=15,
    random_state=RANDOM_STATE,
)

ensemble_clfs = [
    ("RandomForestClassifier, max_features='sqrt'",
     RandomForestClassifier(warm_start=True, oob_score=True, max_features="sqrt",
                            random_state=RANDOM_STATE)),
    ("RandomForestClassifier, max_features='log2'",
     RandomForestClassifier(warm_start=True, max_features="log2", oob_score=True,
                            random_state=RANDOM_STATE)),
    ("RandomForestClassifier, max_features=None",
     RandomForestClassifier(warm_start=True, max_features=None, oob_score=True,
                            random_state=RANDOM_STATE)),
]

error_rate = OrderedDict((label, []) for label, _ in ensemble_clfs)

min_estimators = 15
max_estimators = 75

for label, clf in ensemble_clfs:
    for i in range(min_estimators, max_estimators + 1, 5):
        clf.set_params(n_estimators=i)
        clf.fit(X, y)
        oob_error = 1 - clf.oob_score_
        error_rate[label].append((i, oob_error))
        print(f"{label}: {i} trees, OOB error {oob_error:.6f}")

print("final", f"{sum(e for errors in error_rate.values() for _, e in errors):.6f}")
