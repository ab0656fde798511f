"""GSMFlow as a scikit-learn classifier on the built-in ``digits`` data.

Real data: scikit-learn's handwritten 8x8 digits (64-d pixel features), each
digit's seven-segment display code as its class vector, the digits 2, 5 and 7
unseen (no training image). ``fit`` sees the seen digits' training images and
all ten class vectors; ``predict`` chooses among all ten digits. What it prints
is measured on the dataset's test split (seen and unseen digits), one seed,
the ``quick`` preset: about a minute on 2 CPU cores.

    python examples/gsmflow_classifier_digits.py
"""

import time
import warnings

import numpy as np
import torch
from sklearn.base import clone

from gsmflow_nflows import GSMFlowClassifier
from gsmflow_nflows.data import load_dataset

# nflows 0.14's LULinear calls a torch function deprecated in torch 2.x; harmless here.
warnings.filterwarnings("ignore", message="torch.triangular_solve is deprecated")

data = load_dataset("digits")  # torch tensors, features min-max scaled as every loader does
# Class id c is row c of class_embeddings (here: the digit c), seen and unseen alike.
class_embeddings = torch.empty(10, data.embedding_dim)
class_embeddings[data.seen_classes] = data.seen_embeddings
class_embeddings[data.unseen_classes] = data.unseen_embeddings
X_train, y_train = data.train_features, data.seen_classes[data.train_labels]
X_seen, y_seen = data.test_seen_features, data.seen_classes[data.test_seen_labels]
X_unseen, y_unseen = data.test_unseen_features, data.unseen_classes[data.test_unseen_labels]
X_test, y_test = torch.cat([X_seen, X_unseen]), torch.cat([y_seen, y_unseen])

model = GSMFlowClassifier(preset="quick", seed=0)
started = time.perf_counter()
model.fit(X_train, y_train, class_embeddings)
seconds = time.perf_counter() - started
print(
    f"fitted on {len(X_train)} images of the digits {model.seen_classes_.tolist()} "
    f"in {seconds:.0f} s; unseen (generated): {model.unseen_classes_.tolist()}"
)

predictions = model.predict(X_test)  # NumPy class ids 0..9
proba = model.predict_proba(X_test)  # NumPy [n, 10], columns = digits 0..9
assert np.array_equal(predictions, proba.argmax(axis=1))
print(
    "first test-unseen images: true",
    y_unseen[:8].tolist(),
    "predicted",
    model.predict(X_unseen[:8]).tolist(),
)

# score: per-class accuracy among all 10 digits on one kind of class, H on both.
print("real digits, test split, quick preset, seed 0 (one seed):")
print(f"  S (seen digits, per-class accuracy)   {100 * model.score(X_seen, y_seen):5.1f}")
print(f"  U (unseen digits, per-class accuracy) {100 * model.score(X_unseen, y_unseen):5.1f}")
print(f"  H (GZSL harmonic mean)                {100 * model.score(X_test, y_test):5.1f}")

# clone: the same parameters, unfitted (what cross-validation and grid searches build).
twin = clone(model)
print(
    "clone: same params",
    twin.get_params() == model.get_params(),
    "| fitted",
    hasattr(twin, "classes_"),
)
