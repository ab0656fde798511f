"""GSMFlow as a scikit-learn classifier: ``GSMFlowClassifier().fit(X, y, class_embeddings)``.

``fit`` builds the model ``gsmflow bench --protocol final`` scores, from arrays:
the features are min-max scaled as the dataset loaders scale them (statistics of
the training features), the flow trains on the seen classes' features, it
generates features of the classes absent from ``y`` (the unseen ones), and the
GZSL softmax classifier trains on the real seen features plus the generated
unseen ones, with the same random streams as the bench's final evaluation.

Class ids are row indices into ``class_embeddings`` (every class, seen and
unseen); ``predict`` returns them, ``predict_proba``'s columns follow them.
Inputs may be NumPy arrays (or array-likes) or torch tensors; outputs are NumPy
arrays, as in scikit-learn.

Example:
    >>> from gsmflow_nflows import GSMFlowClassifier
    >>> model = GSMFlowClassifier(preset="smoke", overrides={"training.lr": 1e-3})
    >>> sorted(model.get_params())
    ['device', 'overrides', 'precision', 'preset', 'seed']
    >>> model.fit(X, y, class_embeddings).predict(X_test)  # doctest: +SKIP
    array([3, 0, 7, ...])
"""

from __future__ import annotations

from collections.abc import Mapping
from numbers import Integral
from typing import Any

import numpy as np
import scipy.sparse
import torch
from nflows.flows.base import Flow
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.preprocessing import MinMaxScaler
from sklearn.utils.validation import check_is_fitted
from torch import Tensor

from gsmflow_nflows.data import DatasetError, GZSLData
from gsmflow_nflows.data.validation import MIN_FEATURE_DIM
from gsmflow_nflows.errors import ConfigError
from gsmflow_nflows.evaluation.classifier import (
    SoftmaxClassifier,
    gzsl_training_set,
    train_softmax_classifier,
)
from gsmflow_nflows.evaluation.metrics import harmonic_mean, per_class_accuracy
from gsmflow_nflows.model import generate_features
from gsmflow_nflows.runtime import Stream, resolve_device, seeded_generator
from gsmflow_nflows.training.config import GSMFlowConfig
from gsmflow_nflows.training.presets import PRESET_KINDS, preset_config
from gsmflow_nflows.training.step import PRECISIONS
from gsmflow_nflows.training.trainer import GSMFlowTrainer

__all__ = ["GSMFlowClassifier"]

#: The dataset name of the arrays a classifier is fitted on (``preset="paper"`` has no
#: published table for it, see :class:`GSMFlowClassifier`).
_DATA_NAME = "GSMFlowClassifier"
#: Rows per forward pass of the classifier in ``predict_proba``.
_BATCH = 8192
#: Torch float dtypes NumPy has.
_NUMPY_FLOATS = (torch.float16, torch.float32, torch.float64)


class GSMFlowClassifier(ClassifierMixin, BaseEstimator):
    """GSMFlow for generalized zero-shot learning, as a scikit-learn classifier.

    ``fit(X, y, class_embeddings)`` takes the features of seen classes only; the
    classes of ``class_embeddings`` absent from ``y`` are the unseen ones, whose
    features are generated. The fitted classifier predicts among all classes.

    ``overrides`` is one dict parameter rather than ``section__field`` keywords:
    scikit-learn reads ``a__b`` as parameter ``b`` of a nested estimator ``a``, and
    keywords outside the signature are not parameters (``get_params`` and ``clone``
    would drop them). A grid search varies it whole:
    ``{"overrides": [{"training.lr": 1e-3}, {"training.lr": 3e-4}]}``.

    Args:
        preset: ``"quick"`` (the default; seconds on the digits), ``"default"``,
            ``"smoke"`` (seconds; its numbers mean nothing) or ``"paper"`` (the paper's
            model and losses; the published per-dataset schedules need the dataset's
            name, so arrays get ``default``'s schedule; the bench has the tables). See
            the README's Presets.
        overrides: ``{"section.field": value}`` set on the preset's config after it
            is derived from the data, e.g. ``{"training.max_iterations": 200,
            "evaluation.samples_per_class": 100}``; sections ``model``, ``training``,
            ``mining``, ``evaluation``. Checked in ``fit``: an unknown field is one
            ``ConfigError`` naming it.
        seed: Seed of every random stream (as the bench's ``seed``).
        device: Where to train and predict; ``None``: the device of ``X`` when it is a
            torch tensor, else the CPU.
        precision: ``"fp32"`` or ``"bf16"`` (autocast of the flow's forward passes).

    Attributes:
        classes_: ``[C]`` the class ids ``0..C-1`` (``predict_proba``'s columns).
        seen_classes_: The ids present in ``y``, ascending.
        unseen_classes_: The ids absent from ``y``, ascending (generated).
        n_features_in_: ``D``.
        scaler_: The ``MinMaxScaler`` fitted on the training features.
        scale_divisor_: The largest scaled training value (1 unless every training
            column is constant); scaled features are divided by it, as the loaders do.
        config_: The :class:`~gsmflow_nflows.training.GSMFlowConfig` trained with.
        device_: The ``torch.device`` of the model.
        n_iter_: Flow iterations trained.
        flow_: The trained nflows ``Flow`` (eval mode).
        classifier_: The trained GZSL softmax classifier (seen outputs first).

    Example:
        >>> model = GSMFlowClassifier(preset="smoke", seed=1)
        >>> model.set_params(overrides={"training.lr": 1e-3}).get_params()["overrides"]
        {'training.lr': 0.001}
        >>> model.fit(X, y, class_embeddings).score(X_test, y_test)  # doctest: +SKIP
        0.41
    """

    def __init__(
        self,
        preset: str = "quick",
        overrides: Mapping[str, Any] | None = None,
        seed: int = 0,
        device: str | torch.device | None = None,
        precision: str = "fp32",
    ) -> None:
        self.preset = preset
        self.overrides = overrides
        self.seed = seed
        self.device = device
        self.precision = precision

    # ---- fit -----------------------------------------------------------------------------

    def fit(self, X: Any, y: Any, class_embeddings: Any) -> GSMFlowClassifier:
        """Train the flow on ``X``, generate the unseen classes, train the GZSL classifier.

        Args:
            X: ``[n, D]`` features of seen classes (NumPy array, array-like or tensor).
            y: ``[n]`` their integer class ids, row indices into ``class_embeddings``.
            class_embeddings: ``[C, A]`` semantic vectors of every class, seen and
                unseen; at least one class must be absent from ``y``.

        Returns:
            ``self``, fitted.

        Raises:
            ConfigError: An unknown preset, precision, device or override, or a bad seed.
            DatasetError: Inputs of the wrong shape or type, non-finite values, ids out of
                range, an all-zero class vector, fewer than 2 classes in ``y``, or none
                left unseen.

        Example:
            >>> model = GSMFlowClassifier(preset="smoke").fit(X, y, E)  # doctest: +SKIP
        """
        seed = self._checked_params()
        device = self._device_for(X)
        # The flow's couplings split the features in two: at least 2 columns.
        features = _matrix("X", X, min_columns=MIN_FEATURE_DIM)
        embeddings = _matrix("class_embeddings", class_embeddings)
        _check_class_vectors(embeddings)
        num_classes = embeddings.shape[0]
        labels = _class_ids("y", y, features.shape[0], num_classes)
        seen = np.unique(labels)
        unseen = np.setdiff1d(np.arange(num_classes), seen)
        if seen.size < 2:
            raise DatasetError(
                f"y holds 1 class ({int(seen[0])}); GSMFlow needs at least 2 seen classes."
            )
        if unseen.size == 0:
            raise DatasetError(
                f"y holds every one of the {num_classes} classes of class_embeddings, so none is "
                "unseen; add the unseen classes' rows to class_embeddings."
            )

        scaler = MinMaxScaler()
        scaled = scaler.fit_transform(features)
        divisor = float(scaled.max())
        divisor = divisor if divisor > 0 else 1.0
        data = GZSLData(
            name=_DATA_NAME,
            train_features=_scaled_float32(scaled / divisor),
            train_labels=torch.from_numpy(np.searchsorted(seen, labels).astype(np.int64)),
            test_seen_features=torch.empty(0, features.shape[1]),
            test_seen_labels=torch.empty(0, dtype=torch.int64),
            test_unseen_features=torch.empty(0, features.shape[1]),
            test_unseen_labels=torch.empty(0, dtype=torch.int64),
            seen_classes=torch.from_numpy(seen.astype(np.int64)),
            unseen_classes=torch.from_numpy(unseen.astype(np.int64)),
            seen_embeddings=torch.from_numpy(embeddings[seen].astype(np.float32)),
            unseen_embeddings=torch.from_numpy(embeddings[unseen].astype(np.float32)),
            class_names=tuple(str(c) for c in range(num_classes)),
        ).to(device)
        config = preset_config(_DATA_NAME, data, self.preset).with_seed(seed)
        config = config.with_overrides(self.overrides or {})

        flow, classifier, iterations = _train(config, data, device, self.precision)
        self.classes_ = np.arange(num_classes)
        self.seen_classes_ = seen.astype(np.int64)
        self.unseen_classes_ = unseen.astype(np.int64)
        self.n_features_in_ = int(features.shape[1])
        self.scaler_ = scaler
        self.scale_divisor_ = divisor
        self.config_ = config
        self.device_ = device
        self.n_iter_ = iterations
        self.flow_ = flow
        self.classifier_ = classifier
        return self

    def _checked_params(self) -> int:
        """Check the parameters (here, not in ``__init__``, as scikit-learn asks); the seed."""
        if self.preset not in PRESET_KINDS:
            raise ConfigError(
                f"Unknown preset {self.preset!r}; choose from {', '.join(PRESET_KINDS)}."
            )
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"Unknown precision {self.precision!r}; choose from {', '.join(PRECISIONS)}."
            )
        seed: object = self.seed  # set by the user: any type until checked
        if isinstance(seed, bool) or not isinstance(seed, Integral):
            raise ConfigError(f"seed must be an integer, got {seed!r}.")
        overrides: object = self.overrides
        if overrides is not None and not isinstance(overrides, Mapping):
            raise ConfigError(
                "overrides must be a dict of 'section.field' -> value or None, "
                f"got {type(overrides).__name__}."
            )
        return int(seed)

    def _device_for(self, X: Any) -> torch.device:
        if self.device is not None:
            return resolve_device(self.device)
        return X.device if isinstance(X, Tensor) else torch.device("cpu")

    # ---- predict -------------------------------------------------------------------------

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities ``[n, C]`` (float64 NumPy), columns in class-id order.

        Args:
            X: ``[n, D]`` features of any classes (NumPy array, array-like or tensor).

        Returns:
            Rows that sum to 1; column ``c`` is class ``c`` of ``class_embeddings``.

        Example:
            >>> model.predict_proba(X_test).sum(axis=1)  # doctest: +SKIP
            array([1., 1., ...])
        """
        check_is_fitted(self)
        features = self._scaled(X)
        with torch.inference_mode():
            log_probs = torch.cat(
                [
                    self.classifier_(features[start : start + _BATCH])
                    for start in range(0, features.shape[0], _BATCH)
                ]
            )
        outputs = torch.softmax(log_probs.double(), dim=1).cpu().numpy()  # seen, then unseen
        proba = np.empty_like(outputs)
        proba[:, np.concatenate([self.seen_classes_, self.unseen_classes_])] = outputs
        return proba

    def predict(self, X: Any) -> np.ndarray:
        """Predicted class ids ``[n]`` in ``0..C-1`` (int64 NumPy): the argmax of
        :meth:`predict_proba`.

        Example:
            >>> model.predict(X_test)  # doctest: +SKIP
            array([3, 0, 7, ...])
        """
        proba = self.predict_proba(X)  # first: before fit, NotFittedError
        return self.classes_[np.argmax(proba, axis=1)]

    def score(self, X: Any, y: Any) -> float:
        """GZSL harmonic mean H when ``y`` holds seen and unseen classes, else per-class accuracy.

        Accuracies are per-class mean top-1 (each class counts equally) among all ``C``
        classes: with both kinds in ``y``, ``S`` over the samples of seen classes, ``U``
        over those of unseen classes, and ``H = 2SU / (S + U)`` (the bench's H); with one
        kind only, the per-class accuracy of all samples (not the ZSL T1, which would
        choose among the unseen classes alone).

        Args:
            X: ``[n, D]`` features.
            y: ``[n]`` their true class ids.

        Returns:
            A fraction in ``[0, 1]``.

        Example:
            >>> model.score(X_test, y_test)  # doctest: +SKIP
            0.41
        """
        predictions = self.predict(X)
        labels = _class_ids("y", y, predictions.shape[0], self.classes_.size)
        is_seen = np.isin(labels, self.seen_classes_)
        if is_seen.all() or not is_seen.any():
            return per_class_accuracy(predictions, labels)
        s = per_class_accuracy(predictions[is_seen], labels[is_seen])
        u = per_class_accuracy(predictions[~is_seen], labels[~is_seen])
        return harmonic_mean(s, u)

    def _scaled(self, X: Any) -> Tensor:
        """``X`` checked and scaled with the training statistics, float32 on ``device_``."""
        features = _matrix("X", X)
        if features.shape[1] != self.n_features_in_:
            raise DatasetError(
                f"X has {features.shape[1]} features, but GSMFlowClassifier is expecting "
                f"{self.n_features_in_} features as input (as in fit)."
            )
        scaled = self.scaler_.transform(features) / self.scale_divisor_
        return _scaled_float32(scaled).to(self.device_)


def _train(
    config: GSMFlowConfig, data: GZSLData, device: torch.device, precision: str
) -> tuple[Flow, SoftmaxClassifier, int]:
    """The bench's final model: the flow, then the classifier on real seen + generated unseen.

    The same steps and random streams as ``evaluate_flow`` at the last iteration
    (``gsmflow_nflows.evaluation.protocols``), so the classifier is the one the
    ``final`` protocol scores.
    """
    trainer = GSMFlowTrainer(config, data, device=device, precision=precision)
    flow = trainer.fit()
    iteration, evaluation = trainer.total_iterations, config.evaluation
    generated, generated_labels = generate_features(
        flow,
        data.unseen_embeddings,
        evaluation.generated_per_class(),
        generator=seeded_generator(config.seed, Stream.GENERATION, iteration),
    )
    features, labels, weights = gzsl_training_set(
        data.train_features,
        data.train_labels,
        generated,
        generated_labels,
        data.num_seen,
        evaluation.generated_weight(),
    )
    classifier = train_softmax_classifier(
        features,
        labels,
        data.num_seen + data.num_unseen,
        **evaluation.classifier_settings(),
        generator=seeded_generator(config.seed, Stream.GZSL_CLASSIFIER, iteration),
        sample_weights=weights,
    )
    return flow, classifier.eval(), iteration


# ---- input checks -------------------------------------------------------------------------


def _numbers(name: str, value: Any) -> np.ndarray:
    """``value`` (a tensor, array or array-like) as a NumPy array of real numbers."""
    if value is None and name == "y":
        raise DatasetError(
            "GSMFlowClassifier requires y to be passed, but the target y is None; "
            "pass the class id of each row of X."
        )
    if value is None:
        raise DatasetError(f"{name} is None; pass an array.")
    if scipy.sparse.issparse(value):
        raise DatasetError(
            f"{name} is a sparse matrix, and sparse input is not supported; "
            f"pass a dense array ({name}.toarray())."
        )
    if isinstance(value, Tensor):
        value = value.detach().cpu()
        if value.is_floating_point() and value.dtype not in _NUMPY_FLOATS:
            value = value.float()  # bfloat16 and the like: no NumPy dtype
        value = value.numpy()
    try:
        array = np.asarray(value)
    except (TypeError, ValueError):
        raise DatasetError(
            f"{name} must be a NumPy array or a torch tensor of numbers, "
            f"got {type(value).__name__}."
        ) from None
    if array.dtype.kind == "c":
        raise DatasetError(f"Complex data not supported: {name} must hold real numbers.")
    if array.dtype.kind not in "biuf":
        raise DatasetError(
            f"{name} must hold real numbers, got dtype {array.dtype}; convert it to a "
            "numeric array."
        )
    return array


def _matrix(name: str, value: Any, *, min_columns: int = 1) -> np.ndarray:
    """A finite 2-D float64 array with at least one row and ``min_columns`` columns."""
    array = _numbers(name, value)
    if array.ndim != 2:
        raise DatasetError(
            f"{name} must be 2-D [rows, columns], got shape {tuple(array.shape)}. "
            "Reshape your data: a single row is x.reshape(1, -1)."
        )
    if array.shape[0] == 0:
        raise DatasetError(
            f"{name} has 0 sample(s) (shape={tuple(array.shape)}) while a minimum of 1 is required."
        )
    if array.shape[1] < min_columns:
        raise DatasetError(
            f"{name} has {array.shape[1]} feature(s) (shape={tuple(array.shape)}) while a "
            f"minimum of {min_columns} is required."
        )
    array = array.astype(np.float64)
    bad = int((~np.isfinite(array)).sum())
    if bad:
        raise DatasetError(f"{name} holds {bad} NaN or inf values; impute or drop them first.")
    return array


def _class_ids(name: str, value: Any, length: int, num_classes: int) -> np.ndarray:
    """Class ids ``[length]`` in ``0..num_classes-1`` (whole numbers, any dtype), as int64."""
    array = _numbers(name, value)
    if array.ndim != 1:
        raise DatasetError(f"{name} must be 1-D [n_samples], got shape {tuple(array.shape)}.")
    if array.shape[0] != length:
        raise DatasetError(f"{name} has {array.shape[0]} entries, but X has {length} rows.")
    if array.dtype.kind == "f" and not (
        np.isfinite(array).all() and (array == np.round(array)).all()
    ):
        raise DatasetError(
            f"{name} holds continuous (non-integer or non-finite) values, but class ids are "
            "integers: the rows of class_embeddings."
        )
    if array.size and (array.min() < 0 or array.max() >= num_classes):
        raise DatasetError(
            f"{name} holds class ids {array.min():g}..{array.max():g}, but there are "
            f"{num_classes} classes (ids 0..{num_classes - 1}, the rows of class_embeddings)."
        )
    return array.astype(np.int64)


def _check_class_vectors(embeddings: np.ndarray) -> None:
    """Every class vector is L2-normalised (relative positioning): none may have norm 0 or inf."""
    norms = np.linalg.norm(embeddings.astype(np.float32), axis=1)
    bad = np.flatnonzero((norms == 0) | ~np.isfinite(norms))
    if bad.size:
        raise DatasetError(
            f"class_embeddings row {int(bad[0])} has an L2 norm of {float(norms[bad[0]]):g} in "
            "float32, but every class vector is L2-normalised; give that class nonzero, "
            "moderate attributes."
        )


def _scaled_float32(array: np.ndarray) -> Tensor:
    """Scaled features as a contiguous float32 tensor; values beyond float32 are refused."""
    if array.size and float(np.abs(array).max()) > float(np.finfo(np.float32).max):
        raise DatasetError(
            "X exceeds the float32 range after the min-max scaling (a feature varies very "
            "little in the training features and a lot here); rescale the features."
        )
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
