"""Simple baselines to run beside GSMFlow on the same split and seed.

* ESZSL: a bilinear compatibility ``x^T V a`` fitted in closed form; no
  generated features, no tuning (``gamma = lambda = 1``).
* Linear-Gaussian: unseen class means predicted from the class embeddings by
  ridge regression, Gaussian noise with the seen classes' pooled within-class
  standard deviation; then exactly GSMFlow's softmax classifier and protocol
  ``final`` (last classifier epoch). A generator without a flow: what GSMFlow
  must beat to show the flow earns its keep.
* Seen-only: GSMFlow's softmax classifier on real seen features only; it has no
  unseen outputs, so ``U = H = 0``. The floor.
* Chance: a uniform guess, ``1 / (S + U)`` for S, U and H, ``1 / U`` for T1.

All accuracies are fractions in ``[0, 1]``.

References:
    Romera-Paredes and Torr, "An embarrassingly simple approach to zero-shot
    learning", ICML 2015.
    Chen et al., "GSMFlow: Generation Shifts Mitigating Flow for Generalized
    Zero-Shot Learning", IEEE Transactions on Multimedia, 2022.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from gsmflow_nflows._checks import (
    check_int,
    check_labels,
    check_matrix,
    check_positive,
)
from gsmflow_nflows.data import GZSLData
from gsmflow_nflows.evaluation.calibration import choose_offset_on_validation
from gsmflow_nflows.evaluation.classifier import predict, train_softmax_classifier
from gsmflow_nflows.evaluation.gzsl import evaluate_generated
from gsmflow_nflows.evaluation.metrics import gzsl_scores, per_class_accuracy, zsl_top1
from gsmflow_nflows.losses import class_means
from gsmflow_nflows.runtime import Stream, seeded_generator
from gsmflow_nflows.semantic_mean import fit_ridge_map, float64_device, pooled_within_class_std
from gsmflow_nflows.training.config import EvaluationConfig

#: The keys of :func:`run_baselines`, in display order.
BASELINES = ("eszsl", "linear_gaussian", "seen_only", "chance")
#: The calibrated linear-Gaussian baseline's name (run beside calibrated GSMFlow only).
CALIBRATED_BASELINE = "linear_gaussian_calibrated"


@dataclass(frozen=True)
class BaselineScores:
    """One baseline's scores on one split and seed. Accuracies are fractions in ``[0, 1]``.

    Attributes:
        S: Per-class accuracy on the seen test images, among all ``S + U`` classes.
        U: Per-class accuracy on the unseen test images, among all ``S + U`` classes.
        H: Harmonic mean of ``S`` and ``U``.
        T1: Conventional ZSL per-class accuracy, among the unseen classes only.
        seconds: Wall time of the baseline.
    """

    S: float
    U: float
    H: float
    T1: float
    seconds: float = 0.0
    #: Calibrated stacking's offset, chosen on the validation split; ``None``: not calibrated.
    offset: float | None = None

    def to_dict(self) -> dict[str, float]:
        """JSON-ready dict ``{"S", "U", "H", "T1", "seconds"}`` (and ``"offset"`` if calibrated)."""
        values = asdict(self)
        if self.offset is None:
            del values["offset"]
        return values


def _check_generator(generator: object) -> torch.Generator:
    if not isinstance(generator, torch.Generator):
        raise TypeError(
            f"Expected generator to be a torch.Generator, got {type(generator).__name__}."
        )
    return generator


def fit_eszsl(
    features: Tensor,
    labels: Tensor,
    embeddings: Tensor,
    *,
    gamma: float = 1.0,
    lam: float = 1.0,
) -> Tensor:
    """ESZSL's closed-form compatibility ``V``: the score of ``x`` for class ``c`` is ``x^T V a_c``.

    With ``X = features^T`` ``[D, N]``, ``Y`` in ``{-1, 1}^{N x S}`` (1 at the
    sample's class, -1 elsewhere, as in the paper) and ``Sig = embeddings^T``
    ``[A, S]``: ``V = (X X^T + gamma I)^{-1} X Y Sig^T (Sig Sig^T + lam I)^{-1}``,
    the minimiser of ``||X^T V Sig - Y||^2 + gamma ||V Sig||^2 + lam ||X^T V||^2
    + gamma lam ||V||^2``. Solved in float64 with ``torch.linalg.solve``.

    Args:
        features: Training features ``[N, D]``.
        labels: Their classes ``[N]`` in ``0..S-1``.
        embeddings: Class embeddings ``[S, A]`` (row ``c`` is class ``c``).
        gamma: Ridge on the feature side, ``> 0``. The default 1 is "no tuning".
        lam: Ridge on the embedding side, ``> 0``. The default 1 is "no tuning".

    Returns:
        ``V`` ``[D, A]`` in the features' dtype, on their device.

    Raises:
        ValueError: On mismatched shapes, labels out of range, or non-positive ridges.

    References:
        Romera-Paredes and Torr, "An embarrassingly simple approach to zero-shot
        learning", ICML 2015 (Eq. 4).

    Example:
        >>> V = fit_eszsl(torch.eye(3), torch.arange(3), torch.eye(3))
        >>> V[0].tolist()  # Y / ((1 + gamma) (1 + lam))
        [0.25, -0.25, -0.25]
    """
    features = check_matrix("features", features)
    embeddings = check_matrix("embeddings", embeddings)
    num_classes = embeddings.shape[0]
    labels = check_labels("labels", labels, length=features.shape[0], num_classes=num_classes)
    gamma = check_positive("gamma", gamma)
    lam = check_positive("lam", lam)
    if features.shape[0] == 0:
        raise ValueError("Expected at least one training sample, got 0.")
    device = float64_device(features.device)
    x = features.to(device, torch.float64)  # [N, D] = X^T
    e = embeddings.to(device, torch.float64)  # [S, A] = Sig^T
    y = torch.full((x.shape[0], num_classes), -1.0, dtype=torch.float64, device=device)
    y[torch.arange(x.shape[0], device=device), labels.to(device)] = 1.0
    eye_d = torch.eye(x.shape[1], dtype=torch.float64, device=device)
    eye_a = torch.eye(e.shape[1], dtype=torch.float64, device=device)
    left = torch.linalg.solve(x.T @ x + gamma * eye_d, x.T @ y @ e)  # (X X^T + gI)^-1 X Y Sig^T
    # right-multiplying by the symmetric (Sig Sig^T + lam I)^-1 is a solve on the transpose
    v = torch.linalg.solve(e.T @ e + lam * eye_a, left.T).T
    return v.to(features.device, features.dtype)


def eszsl_baseline(data: GZSLData, *, gamma: float = 1.0, lam: float = 1.0) -> BaselineScores:
    """ESZSL (closed form, no tuning: ``gamma = lambda = 1``) scored for GZSL and ZSL.

    ``V`` is fitted on the training features and the seen class embeddings
    (:func:`fit_eszsl`). GZSL: argmax of ``x^T V a_c`` over the seen embeddings
    followed by the unseen ones, so outputs ``0..S-1`` are seen and
    ``S..S+U-1`` unseen (as :class:`GZSLData` documents); S, U, H by
    :func:`gzsl_scores`. T1: argmax over the unseen classes only (:func:`zsl_top1`).

    Args:
        data: The split to fit and score.
        gamma: Ridge on the feature side (default 1: no tuning).
        lam: Ridge on the embedding side (default 1: no tuning).

    Returns:
        :class:`BaselineScores`.

    References:
        Romera-Paredes and Torr, "An embarrassingly simple approach to zero-shot
        learning", ICML 2015.

    Example:
        >>> scores = eszsl_baseline(load_dataset("synthetic"))  # doctest: +SKIP
        >>> scores.H  # doctest: +SKIP
    """
    started = time.perf_counter()
    v = fit_eszsl(
        data.train_features, data.train_labels, data.seen_embeddings, gamma=gamma, lam=lam
    )
    all_embeddings = torch.cat([data.seen_embeddings, data.unseen_embeddings]).to(v)
    projected = v @ all_embeddings.T  # [D, S + U]
    seen_scores = data.test_seen_features.to(v) @ projected
    unseen_scores = data.test_unseen_features.to(v) @ projected
    gzsl = gzsl_scores(
        seen_scores,
        data.test_seen_labels,
        unseen_scores,
        data.test_unseen_labels,
        data.num_seen,
    )
    top1 = zsl_top1(unseen_scores[:, data.num_seen :], data.test_unseen_labels)
    return BaselineScores(
        S=gzsl.S, U=gzsl.U, H=gzsl.H, T1=top1, seconds=time.perf_counter() - started
    )


def ridge_unseen_means(
    seen_embeddings: Tensor,
    seen_means: Tensor,
    unseen_embeddings: Tensor,
    *,
    alpha: float = 1.0,
) -> Tensor:
    """Unseen class means predicted from class embeddings by ridge regression, in float64.

    ``W = (A_s^T A_s + alpha I)^{-1} A_s^T M_s`` on the centred seen embeddings
    ``A_s`` and centred seen means ``M_s`` (the intercept, unpenalised, is
    handled by centring, as scikit-learn's ``Ridge(alpha)``); the prediction
    for an unseen embedding ``a`` is ``(a - mean(A)) W + mean(M)``.

    Args:
        seen_embeddings: Seen class embeddings ``[S, A]``.
        seen_means: Seen class mean features ``[S, D]``.
        unseen_embeddings: Unseen class embeddings ``[U, A]``.
        alpha: Ridge penalty, ``> 0``.

    Returns:
        ``[U, D]`` float64 predicted means, on the seen means' device.

    Example:
        >>> a = torch.tensor([[0.0], [1.0], [2.0]])
        >>> ridge_unseen_means(a, 2 * a, torch.tensor([[3.0]]), alpha=1e-9).round().tolist()
        [[6.0]]
    """
    unseen_embeddings = check_matrix(
        "unseen_embeddings", unseen_embeddings, columns=seen_embeddings.shape[1]
    )
    weight, bias = fit_ridge_map(seen_embeddings, seen_means, alpha=alpha)
    return unseen_embeddings.to(weight.device, torch.float64) @ weight + bias


def linear_gaussian_features(
    data: GZSLData,
    num_per_class: int,
    *,
    generator: torch.Generator,
    alpha: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """Unseen features from the linear-Gaussian model: ridge means plus pooled Gaussian noise.

    Unseen class ``u`` gets ``mean_u + sigma * z`` with ``mean_u`` from
    :func:`ridge_unseen_means` (fitted on the seen class means of the training
    features), ``sigma`` the :func:`pooled_within_class_std` of the training
    features, and ``z`` standard normal, drawn with ``generator`` on its device.

    Args:
        data: The split (its training features and class embeddings).
        num_per_class: Features per unseen class, ``>= 1``.
        generator: Source of the noise.
        alpha: Ridge penalty of the mean regression, ``> 0``.

    Returns:
        ``(features [U * num_per_class, D], labels [U * num_per_class])`` on the
        data's device, features float32, labels ``0..U-1`` class by class (as
        :func:`gsmflow_nflows.model.generate_features`).

    Example:
        >>> x, y = linear_gaussian_features(data, 10, generator=torch.Generator())  # doctest: +SKIP
    """
    num_per_class = check_int("num_per_class", num_per_class, minimum=1)
    generator = _check_generator(generator)
    seen_means = class_means(data.train_features.double(), data.train_labels, data.num_seen)
    means = ridge_unseen_means(
        data.seen_embeddings, seen_means, data.unseen_embeddings, alpha=alpha
    )
    sigma = pooled_within_class_std(data.train_features, data.train_labels, data.num_seen)
    device = data.train_features.device
    labels = torch.arange(data.num_unseen, device=device).repeat_interleave(num_per_class)
    noise = torch.randn(
        labels.numel(), data.feature_dim, generator=generator, device=generator.device
    ).to(device)
    # Row blocks, so the float64 temporaries stay small (aPY's 108,000 x 2048 at once: ~5 GB).
    features = torch.empty_like(noise, dtype=data.train_features.dtype)
    for start in range(0, labels.numel(), _ROWS_PER_BLOCK):
        rows = slice(start, start + _ROWS_PER_BLOCK)
        features[rows] = means[labels[rows]] + sigma * noise[rows].double()
    return features, labels


#: Rows of generated features computed at once in :func:`linear_gaussian_features`.
_ROWS_PER_BLOCK = 8192


def linear_gaussian_baseline(
    data: GZSLData,
    evaluation: EvaluationConfig,
    *,
    generator: torch.Generator,
    alpha: float = 1.0,
    calibration: float | None = None,
) -> BaselineScores:
    """The linear-Gaussian generator with GSMFlow's own classifier and protocol ``final``.

    Draws two classifier seeds from ``generator``, then
    ``evaluation.generated_per_class()`` features per unseen class
    (:func:`linear_gaussian_features`), each weighing ``evaluation.generated_weight()``;
    trains exactly GSMFlow's GZSL and ZSL classifiers (:func:`evaluate_gzsl` /
    :func:`evaluate_zsl` with ``evaluation.classifier_settings()``), each seeded
    from one of those seeds, and reports their LAST epoch.

    Args:
        data: The split.
        evaluation: GSMFlow's evaluation settings (samples per class, classifier).
        generator: Source of the classifier seeds and the noise.
        alpha: Ridge penalty of the mean regression, ``> 0`` (default 1).
        calibration: Calibrated stacking's offset for the GZSL classifier (recorded
            in the scores), or ``None`` for none; T1 does not depend on it.

    Returns:
        :class:`BaselineScores`.

    Example:
        >>> scores = linear_gaussian_baseline(  # doctest: +SKIP
        ...     data, EvaluationConfig(), generator=torch.Generator().manual_seed(0)
        ... )
    """
    if not isinstance(evaluation, EvaluationConfig):
        raise TypeError(
            f"Expected evaluation to be an EvaluationConfig, got {type(evaluation).__name__}."
        )
    generator = _check_generator(generator)
    started = time.perf_counter()
    gzsl_seed, zsl_seed = torch.randint(
        0, 2**62, (2,), generator=generator, device=generator.device
    ).tolist()
    generated, generated_labels = linear_gaussian_features(
        data, evaluation.generated_per_class(), generator=generator, alpha=alpha
    )
    settings = {**evaluation.classifier_settings(), "last_epoch_only": True}
    gzsl, zsl = evaluate_generated(
        data,
        generated,
        generated_labels,
        gzsl_generator=torch.Generator().manual_seed(gzsl_seed),
        zsl_generator=torch.Generator().manual_seed(zsl_seed),
        calibration=0.0 if calibration is None else calibration,
        generated_weight=evaluation.generated_weight(),
        **settings,
    )
    last = gzsl[-1]
    return BaselineScores(
        S=last.S,
        U=last.U,
        H=last.H,
        T1=zsl[-1],
        seconds=time.perf_counter() - started,
        offset=calibration,
    )


def calibrated_linear_gaussian_baseline(
    data: GZSLData,
    val_data: GZSLData,
    evaluation: EvaluationConfig,
    *,
    seed: int,
    alpha: float = 1.0,
) -> BaselineScores:
    """The linear-Gaussian baseline with calibrated stacking, chosen as GSMFlow's is.

    The offset comes from the validation split only: linear-Gaussian features of
    ``val_data``'s unseen (validation) classes, fitted on its training
    features, and :func:`~gsmflow_nflows.evaluation.calibration.choose_offset_on_validation`;
    then the test classifier of :func:`linear_gaussian_baseline` (the same
    features and classifier as the uncalibrated row of ``seed``) is scored with it.

    Args:
        data: The split scored (test).
        val_data: Its validation split.
        evaluation: GSMFlow's evaluation settings.
        seed: The run's seed.
        alpha: Ridge penalty of the mean regression.

    Returns:
        :class:`BaselineScores` with ``offset`` set; ``seconds`` covers both parts.

    Example:
        >>> scores = calibrated_linear_gaussian_baseline(  # doctest: +SKIP
        ...     data, val_data, config.evaluation, seed=0)
    """
    started = time.perf_counter()
    generator = seeded_generator(seed, Stream.CALIBRATED_BASELINE)
    features, labels = linear_gaussian_features(
        val_data, evaluation.generated_per_class(), generator=generator, alpha=alpha
    )
    chosen = choose_offset_on_validation(
        val_data,
        features,
        labels,
        evaluation.classifier_settings(),
        generator=generator,
        generated_weight=evaluation.generated_weight(),
    )
    scores = linear_gaussian_baseline(
        data,
        evaluation,
        generator=seeded_generator(seed, Stream.LINEAR_GAUSSIAN_BASELINE),
        alpha=alpha,
        calibration=chosen["offset"],
    )
    return dataclasses.replace(scores, seconds=time.perf_counter() - started)


def seen_only_baseline(
    data: GZSLData, evaluation: EvaluationConfig, *, generator: torch.Generator
) -> BaselineScores:
    """The floor GSMFlow must lift: a softmax classifier trained on real seen features only.

    The classifier is GSMFlow's (``evaluation.classifier_settings()``) over the
    ``S`` seen classes. It has no unseen outputs, so every unseen test image is
    misclassified: ``U = 0``, ``H = 0`` and ``T1 = 0`` exactly; ``S`` is its
    per-class accuracy on the seen test images.

    Args:
        data: The split.
        evaluation: GSMFlow's evaluation settings (the classifier).
        generator: Source of the classifier's initialisation and shuffling.

    Returns:
        :class:`BaselineScores`.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> seen_only_baseline(data, EvaluationConfig(), generator=g).H  # doctest: +SKIP
        0.0
    """
    if not isinstance(evaluation, EvaluationConfig):
        raise TypeError(
            f"Expected evaluation to be an EvaluationConfig, got {type(evaluation).__name__}."
        )
    generator = _check_generator(generator)
    started = time.perf_counter()
    classifier = train_softmax_classifier(
        data.train_features,
        data.train_labels,
        data.num_seen,
        **evaluation.classifier_settings(),
        generator=generator,
    )
    device = data.train_features.device
    seen = per_class_accuracy(
        predict(classifier, data.test_seen_features.to(device)),
        data.test_seen_labels.to(device),
    )
    return BaselineScores(S=seen, U=0.0, H=0.0, T1=0.0, seconds=time.perf_counter() - started)


def chance_baseline(data: GZSLData) -> BaselineScores:
    """A uniform guess: ``1 / (S + U)`` for S, U and H; ``1 / U`` for T1 (expected values).

    Args:
        data: The split (its class counts).

    Returns:
        :class:`BaselineScores` with ``seconds = 0``.

    Example:
        >>> chance_baseline(data).T1  # doctest: +SKIP
        0.5
    """
    gzsl = 1.0 / (data.num_seen + data.num_unseen)
    return BaselineScores(S=gzsl, U=gzsl, H=gzsl, T1=1.0 / data.num_unseen, seconds=0.0)


def run_baselines(
    data: GZSLData,
    evaluation: EvaluationConfig,
    *,
    seed: int,
    device: str | torch.device | None = None,
    val_data: GZSLData | None = None,
) -> dict[str, BaselineScores]:
    """Every baseline on one split and seed (the seed of the GSMFlow run beside them).

    The linear-Gaussian baseline draws from the stream
    ``Stream.LINEAR_GAUSSIAN_BASELINE`` of ``seed``, the seen-only classifier
    from ``Stream.SEEN_ONLY_BASELINE``; ESZSL and chance are deterministic.

    Args:
        data: The split GSMFlow is scored on.
        evaluation: GSMFlow's evaluation settings.
        seed: The run's seed.
        device: Where to compute; ``None`` keeps the data where it is.
        val_data: The validation split; given, the calibrated linear-Gaussian
            baseline (:func:`calibrated_linear_gaussian_baseline`) runs too, under
            ``"linear_gaussian_calibrated"``.

    Returns:
        ``{"eszsl", "linear_gaussian", "seen_only", "chance"}`` (and
        ``"linear_gaussian_calibrated"``) -> :class:`BaselineScores`.

    Example:
        >>> scores = run_baselines(data, config.evaluation, seed=0)  # doctest: +SKIP
        >>> sorted(scores)  # doctest: +SKIP
        ['chance', 'eszsl', 'linear_gaussian', 'seen_only']
    """
    seed = check_int("seed", seed, minimum=-(2**63))
    if device is not None:
        data = data.to(device)
        val_data = val_data.to(device) if val_data is not None else None
    calibrated = {}
    if val_data is not None:
        calibrated[CALIBRATED_BASELINE] = calibrated_linear_gaussian_baseline(
            data, val_data, evaluation, seed=seed
        )
    return {
        "eszsl": eszsl_baseline(data),
        "linear_gaussian": linear_gaussian_baseline(
            data, evaluation, generator=seeded_generator(seed, Stream.LINEAR_GAUSSIAN_BASELINE)
        ),
        "seen_only": seen_only_baseline(
            data, evaluation, generator=seeded_generator(seed, Stream.SEEN_ONLY_BASELINE)
        ),
        "chance": chance_baseline(data),
        **calibrated,
    }


__all__ = [
    "BASELINES",
    "CALIBRATED_BASELINE",
    "BaselineScores",
    "calibrated_linear_gaussian_baseline",
    "chance_baseline",
    "eszsl_baseline",
    "fit_eszsl",
    "linear_gaussian_baseline",
    "linear_gaussian_features",
    "pooled_within_class_std",
    "ridge_unseen_means",
    "run_baselines",
    "seen_only_baseline",
]
