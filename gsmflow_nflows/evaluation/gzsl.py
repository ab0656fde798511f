"""Per-epoch GZSL and ZSL evaluation of generated unseen features.

The generative recipe (GSMFlow, "Evaluation"): a softmax classifier is trained on
real seen features plus generated unseen features and scored on the test sets
after EVERY classifier epoch. These functions return the whole per-epoch list;
choosing an epoch (best on test as in the paper, chosen on validation, or the
last one) is the protocol layer's job, so the choice stays visible.

References:
    Chen et al., "GSMFlow: Generation Shifts Mitigating Flow for Generalized
    Zero-Shot Learning", IEEE Transactions on Multimedia, 2022.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from gsmflow_nflows._checks import check_int, check_labels, check_matrix
from gsmflow_nflows.data import GZSLData
from gsmflow_nflows.evaluation.calibration import calibrated_predict
from gsmflow_nflows.evaluation.classifier import (
    SoftmaxClassifier,
    classifier_epochs,
    gzsl_training_set,
    predict,
    train_softmax_classifier,
)
from gsmflow_nflows.evaluation.metrics import GZSLScores, gzsl_scores, zsl_top1


def _part_labels(part: str, labels: Tensor, features: Tensor, num_classes: int) -> Tensor:
    """The checked ``<part>_labels``: one per row of ``features``, in ``0..num_classes-1``."""
    return check_labels(f"{part}_labels", labels, length=features.shape[0], num_classes=num_classes)


def evaluate_gzsl(
    *,
    seen_features: Tensor,
    seen_labels: Tensor,
    generated_features: Tensor,
    generated_labels: Tensor,
    test_seen_features: Tensor,
    test_seen_labels: Tensor,
    test_unseen_features: Tensor,
    test_unseen_labels: Tensor,
    num_seen: int,
    num_unseen: int,
    lr: float,
    batch_size: int,
    epochs: int,
    min_steps: int = 0,
    weight_decay: float = 0.0,
    lr_schedule: str = "constant",
    betas: tuple[float, float] = (0.5, 0.999),
    generator: torch.Generator | None = None,
    last_epoch_only: bool = False,
    calibration: float = 0.0,
    generated_weight: float = 1.0,
    per_class: bool = False,
) -> list[GZSLScores]:
    """Train the GZSL classifier over ``S + U`` classes and score it after every epoch.

    The classifier's training set is the real seen features (labels ``0..S-1``)
    followed by the generated unseen features (labels ``0..U-1``, shifted here to
    ``S..S+U-1``). All arguments are keyword-only, so that seen and unseen
    tensors cannot be swapped by position.

    Args:
        seen_features: Real seen training features ``[Ns, D]``.
        seen_labels: Their labels ``[Ns]`` in ``0..S-1``.
        generated_features: Generated unseen features ``[Ng, D]``.
        generated_labels: Their labels ``[Ng]`` in ``0..U-1``.
        test_seen_features: Seen test features ``[Ts, D]``.
        test_seen_labels: Their labels ``[Ts]`` in ``0..S-1``.
        test_unseen_features: Unseen test features ``[Tu, D]``.
        test_unseen_labels: Their labels ``[Tu]`` in ``0..U-1``.
        num_seen: ``S``.
        num_unseen: ``U``.
        lr: Classifier learning rate (``cls_lr``).
        batch_size: Classifier batch size (``cls_batch``; clamped to the training set size).
        epochs: Classifier epochs (``cls_step``).
        min_steps: Floor on the classifier's optimizer steps (see ``classifier_epochs``).
        weight_decay: The classifier's L2 penalty.
        lr_schedule: ``"constant"`` or ``"cosine"`` (see ``train_softmax_classifier``).
        betas: Adam betas.
        generator: Source of the classifier's initialisation and shuffling.
        last_epoch_only: Score only after the last epoch (the ``final`` protocol);
            the list then holds one entry.
        calibration: Calibrated stacking: subtracted from the seen classes' scores
            before the argmax (see :mod:`gsmflow_nflows.evaluation.calibration`).
        generated_weight: The weight of each generated feature in the classifier's
            loss, a real seen feature weighing 1 (``1 / oversample`` when each
            generated sample is drawn ``oversample`` times; see
            :meth:`~gsmflow_nflows.training.config.EvaluationConfig.generated_weight`).
        per_class: Also record each class's accuracy in the scores (see :func:`gzsl_scores`).

    Returns:
        One :class:`GZSLScores` (fractions) per classifier epoch (``epochs``, or more
        when ``min_steps`` raises them).

    Example:
        >>> x, y = torch.randn(20, 4), torch.arange(20) % 2
        >>> scores = evaluate_gzsl(
        ...     seen_features=x, seen_labels=y, generated_features=x + 5, generated_labels=y,
        ...     test_seen_features=x, test_seen_labels=y,
        ...     test_unseen_features=x + 5, test_unseen_labels=y,
        ...     num_seen=2, num_unseen=2, lr=1e-2, batch_size=16, epochs=3,
        ... )
        >>> len(scores)
        3
        >>> paper_choice = max(scores, key=lambda s: s.H)  # selected on TEST, as the paper
    """
    num_seen = check_int("num_seen", num_seen, minimum=1)
    num_unseen = check_int("num_unseen", num_unseen, minimum=1)
    seen_features = check_matrix("seen_features", seen_features)
    dim = seen_features.shape[1]
    generated_features = check_matrix("generated_features", generated_features, columns=dim)
    test_seen_features = check_matrix("test_seen_features", test_seen_features, columns=dim)
    test_unseen_features = check_matrix("test_unseen_features", test_unseen_features, columns=dim)
    seen_labels = _part_labels("seen", seen_labels, seen_features, num_seen)
    generated_labels = _part_labels("generated", generated_labels, generated_features, num_unseen)
    test_seen_labels = _part_labels("test_seen", test_seen_labels, test_seen_features, num_seen)
    test_unseen_labels = _part_labels(
        "test_unseen", test_unseen_labels, test_unseen_features, num_unseen
    )
    device, dtype = seen_features.device, seen_features.dtype
    train_features, train_labels, weights = gzsl_training_set(
        seen_features, seen_labels, generated_features, generated_labels, num_seen, generated_weight
    )
    test_seen_features = test_seen_features.to(device, dtype)
    test_unseen_features = test_unseen_features.to(device, dtype)
    scores: list[GZSLScores] = []
    total = classifier_epochs(train_features.shape[0], batch_size, epochs, min_steps)

    def score(epoch: int, classifier: SoftmaxClassifier) -> None:
        if last_epoch_only and epoch != total - 1:
            return
        scores.append(
            gzsl_scores(
                calibrated_predict(classifier, test_seen_features, num_seen, calibration),
                test_seen_labels.to(device),
                calibrated_predict(classifier, test_unseen_features, num_seen, calibration),
                test_unseen_labels.to(device),
                num_seen,
                per_class=per_class,
            )
        )

    train_softmax_classifier(
        train_features,
        train_labels,
        num_seen + num_unseen,
        lr=lr,
        batch_size=batch_size,
        epochs=epochs,
        min_steps=min_steps,
        weight_decay=weight_decay,
        lr_schedule=lr_schedule,
        betas=betas,
        generator=generator,
        on_epoch=score,
        sample_weights=weights,
    )
    return scores


def evaluate_zsl(
    *,
    generated_features: Tensor,
    generated_labels: Tensor,
    test_unseen_features: Tensor,
    test_unseen_labels: Tensor,
    num_unseen: int,
    lr: float,
    batch_size: int,
    epochs: int,
    min_steps: int = 0,
    weight_decay: float = 0.0,
    lr_schedule: str = "constant",
    betas: tuple[float, float] = (0.5, 0.999),
    generator: torch.Generator | None = None,
    last_epoch_only: bool = False,
) -> list[float]:
    """Conventional ZSL: a classifier over the unseen classes only, T1 after every epoch.

    Args:
        generated_features: Generated unseen features ``[Ng, D]``.
        generated_labels: Their labels ``[Ng]`` in ``0..U-1``.
        test_unseen_features: Unseen test features ``[Tu, D]``.
        test_unseen_labels: Their labels ``[Tu]`` in ``0..U-1``.
        num_unseen: ``U``.
        lr: Classifier learning rate.
        batch_size: Classifier batch size (clamped to the training set size).
        epochs: Classifier epochs.
        min_steps: Floor on the classifier's optimizer steps (see ``classifier_epochs``).
        weight_decay: The classifier's L2 penalty.
        lr_schedule: ``"constant"`` or ``"cosine"`` (see ``train_softmax_classifier``).
        betas: Adam betas.
        generator: Source of the classifier's initialisation and shuffling.
        last_epoch_only: Score only after the last epoch; the list then holds one entry.

    Returns:
        T1 (a fraction) per classifier epoch.

    Example:
        >>> x, y = torch.randn(20, 4), torch.arange(20) % 2
        >>> top1 = evaluate_zsl(
        ...     generated_features=x, generated_labels=y,
        ...     test_unseen_features=x, test_unseen_labels=y,
        ...     num_unseen=2, lr=1e-2, batch_size=16, epochs=3,
        ... )
        >>> len(top1)
        3
    """
    num_unseen = check_int("num_unseen", num_unseen, minimum=1)
    generated_features = check_matrix("generated_features", generated_features)
    dim = generated_features.shape[1]
    test_unseen_features = check_matrix("test_unseen_features", test_unseen_features, columns=dim)
    generated_labels = _part_labels("generated", generated_labels, generated_features, num_unseen)
    test_unseen_labels = _part_labels(
        "test_unseen", test_unseen_labels, test_unseen_features, num_unseen
    )
    device, dtype = generated_features.device, generated_features.dtype
    test_unseen_features = test_unseen_features.to(device, dtype)
    test_unseen_labels = test_unseen_labels.to(device)
    top1: list[float] = []
    total = classifier_epochs(generated_features.shape[0], batch_size, epochs, min_steps)

    def score(epoch: int, classifier: SoftmaxClassifier) -> None:
        if last_epoch_only and epoch != total - 1:
            return
        top1.append(zsl_top1(predict(classifier, test_unseen_features), test_unseen_labels))

    train_softmax_classifier(
        generated_features,
        generated_labels.to(device),
        num_unseen,
        lr=lr,
        batch_size=batch_size,
        epochs=epochs,
        min_steps=min_steps,
        weight_decay=weight_decay,
        lr_schedule=lr_schedule,
        betas=betas,
        generator=generator,
        on_epoch=score,
    )
    return top1


def evaluate_generated(
    data: GZSLData,
    generated_features: Tensor,
    generated_labels: Tensor,
    *,
    gzsl_generator: torch.Generator | None,
    zsl_generator: torch.Generator | None,
    calibration: float = 0.0,
    generated_weight: float = 1.0,
    per_class: bool = False,
    **classifier: Any,
) -> tuple[list[GZSLScores], list[float]]:
    """GZSL and ZSL evaluation of generated unseen features against a dataset's test sets.

    The one path every generator (GSMFlow, the linear-Gaussian baseline) is scored by:
    :func:`evaluate_gzsl` on the dataset's real seen training features plus the
    generated ones, and :func:`evaluate_zsl` on the generated ones, on the generated
    features' device.

    Args:
        data: The split whose training and test sets are used.
        generated_features: ``[Ng, D]`` features of the unseen classes of ``data``.
        generated_labels: ``[Ng]`` their labels in ``0..U-1``.
        gzsl_generator: Source of the GZSL classifier's initialisation and shuffling.
        zsl_generator: The same for the ZSL classifier.
        calibration: Calibrated stacking offset of the GZSL classifier (T1 is not affected).
        generated_weight: Each generated feature's weight in the GZSL classifier's loss
            (a real one weighs 1). The ZSL classifier sees generated features only, whose
            equal weights cancel out.
        per_class: Record each class's accuracy in the GZSL scores.
        **classifier: The classifier's settings (``lr``, ``batch_size``, ``epochs``,
            ``min_steps``, ``weight_decay``, ``last_epoch_only``, ...).

    Returns:
        ``(GZSL scores per scored epoch, T1 per scored epoch)``.

    Example:
        >>> gzsl, t1 = evaluate_generated(  # doctest: +SKIP
        ...     data, x, y, gzsl_generator=None, zsl_generator=None,
        ...     **config.evaluation.classifier_settings()
        ... )
    """
    device = generated_features.device
    gzsl = evaluate_gzsl(
        seen_features=data.train_features.to(device),
        seen_labels=data.train_labels.to(device),
        generated_features=generated_features,
        generated_labels=generated_labels,
        test_seen_features=data.test_seen_features.to(device),
        test_seen_labels=data.test_seen_labels.to(device),
        test_unseen_features=data.test_unseen_features.to(device),
        test_unseen_labels=data.test_unseen_labels.to(device),
        num_seen=data.num_seen,
        num_unseen=data.num_unseen,
        generator=gzsl_generator,
        calibration=calibration,
        generated_weight=generated_weight,
        per_class=per_class,
        **classifier,
    )
    zsl = evaluate_zsl(
        generated_features=generated_features,
        generated_labels=generated_labels,
        test_unseen_features=data.test_unseen_features.to(device),
        test_unseen_labels=data.test_unseen_labels.to(device),
        num_unseen=data.num_unseen,
        generator=zsl_generator,
        **classifier,
    )
    return gzsl, zsl
