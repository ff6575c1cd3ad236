# After scikit-learn's example examples/applications/plot_out_of_core_classification.py
# ("Out-of-core classification of text documents", https://github.com/scikit-learn/scikit-learn,
# BSD 3-Clause License, Copyright (c) the scikit-learn developers), written again for relive's
# resume corpus (bench/resume_fidelity.py). As in the example: documents arrive one at a time
# from a generator, a HashingVectorizer(n_features=2**18, alternate_sign=False) turns
# mini-batches taken with itertools.islice into features, and online classifiers
# (SGDClassifier(max_iter=5), Perceptron, MultinomialNB(alpha=0.01)) learn "acq" against the
# rest with partial_fit, scored on a held-out first batch after every mini-batch. Changed: the
# Reuters archive (a download) is replaced by a generator of synthetic Reuters-like documents
# from a seeded random.Random; the classifiers get random_state=0; PassiveAggressiveClassifier
# (deprecated in scikit-learn 1.8) is left out; mini-batches of 200 documents; no timings and
# no plots: accuracies are printed.
import itertools
import random

import numpy as np
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.linear_model import Perceptron, SGDClassifier
from sklearn.naive_bayes import MultinomialNB

TOPICS = ["acq", "earn", "crude", "trade", "money-fx", "grain"]
WORDS = {topic: [f"{topic[:3]}{i}" for i in range(40)] for topic in TOPICS}
COMMON = [f"w{i}" for i in range(400)]


def stream_documents(n_documents, seed=0):
    """Iterate over synthetic documents: dicts with 'title', 'body' and 'topics', as the
    example's Reuters parser yields them (some without topics, which are skipped)."""
    rng = random.Random(seed)
    for _ in range(n_documents):
        topic = rng.choice(TOPICS)
        words = [rng.choice(WORDS[topic]) if rng.random() < 0.25 else rng.choice(COMMON)
                 for _ in range(rng.randint(20, 80))]
        topics = [] if rng.random() < 0.1 else [topic]
        yield {"title": " ".join(words[:5]), "body": " ".join(words), "topics": topics}


vectorizer = HashingVectorizer(decode_error="ignore", n_features=2**18, alternate_sign=False)
data_stream = stream_documents(6000)
all_classes = np.array([0, 1])
positive_class = "acq"

partial_fit_classifiers = {
    "SGD": SGDClassifier(max_iter=5, random_state=0),
    "Perceptron": Perceptron(random_state=0),
    "NB Multinomial": MultinomialNB(alpha=0.01),
}


def get_minibatch(doc_iter, size, pos_class=positive_class):
    """Extract a minibatch of examples, return a tuple X_text, y."""
    data = [
        ("{title}\n\n{body}".format(**doc), pos_class in doc["topics"])
        for doc in itertools.islice(doc_iter, size)
        if doc["topics"]
    ]
    if not len(data):
        return np.asarray([], dtype=int), np.asarray([], dtype=int)
    X_text, y = zip(*data)
    return X_text, np.asarray(y, dtype=int)


def iter_minibatches(doc_iter, minibatch_size):
    """Generator of minibatches."""
    X_text, y = get_minibatch(doc_iter, minibatch_size)
    while len(X_text):
        yield X_text, y
        X_text, y = get_minibatch(doc_iter, minibatch_size)


X_test_text, y_test = get_minibatch(data_stream, 1000)
X_test = vectorizer.transform(X_test_text)
print("Test set is %d documents (%d positive)" % (len(y_test), sum(y_test)))

cls_stats = {name: {"n_train": 0, "n_train_pos": 0, "accuracy": 0.0} for name in partial_fit_classifiers}

for i, (X_train_text, y_train) in enumerate(iter_minibatches(data_stream, 200)):
    X_train = vectorizer.transform(X_train_text)
    for cls_name, cls in partial_fit_classifiers.items():
        cls.partial_fit(X_train, y_train, classes=all_classes)
        stats = cls_stats[cls_name]
        stats["n_train"] += X_train.shape[0]
        stats["n_train_pos"] += sum(y_train)
        stats["accuracy"] = cls.score(X_test, y_test)
        print("%20s classifier : %6d train docs (%6d positive) accuracy: %.4f"
              % (cls_name, stats["n_train"], stats["n_train_pos"], stats["accuracy"]))

print("final", " ".join(f"{name}={s['accuracy']:.4f}" for name, s in sorted(cls_stats.items())))
