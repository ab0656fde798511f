"""GZSL metrics: per-class mean top-1 accuracy, S / U / H, and ZSL T1.

All accuracies are FRACTIONS in ``[0, 1]`` (the paper and the CLI show percent:
multiply by 100 for display).

References:
    Chen et al., "GSMFlow: Generation Shifts Mitigating Flow for Generalized
    Zero-Shot Learning", IEEE Transactions on Multimedia, 2022.
    Xian et al., "Zero-Shot Learning - the Good, the Bad and the Ugly", CVPR 2017.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from gsmflow_nflows._checks import check_int, check_labels, check_real

TensorLike = Tensor | np.ndarray | Sequence[int]


def _as_tensor(name: str, value: object) -> Tensor:
    if isinstance(value, Tensor):
        return value
    try:
        return torch.as_tensor(np.asarray(value))
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"Expected {name} to be a tensor or array, got {type(value).__name__}."
        ) from error


def _as_predictions(name: str, value: object) -> Tensor:
    """Class predictions from 1-D integer predictions or 2-D ``[N, C]`` scores (argmax)."""
    value = _as_tensor(name, value)
    if value.dim() == 2 and value.is_floating_point():
        return value.argmax(dim=1)
    if value.dim() != 1 or value.is_floating_point() or value.dtype == torch.bool:
        raise ValueError(
            f"Expected {name} to be 1-D integer predictions [N] or 2-D float scores [N, C], "
            f"got shape {tuple(value.shape)} and dtype {value.dtype}."
        )
    return value.long()


def per_class_accuracy(
    predictions: TensorLike, labels: TensorLike, classes: TensorLike | None = None
) -> float:
    """Mean over classes of the per-class top-1 accuracy ("per-class mean accuracy").

    Each class counts equally, however many test samples it has (this is
    scikit-learn's ``balanced_accuracy_score`` when ``classes`` is ``None``).

    Args:
        predictions: Predicted class ids ``[N]``, or scores ``[N, C]`` (argmax taken).
        labels: True class ids ``[N]``, non-negative.
        classes: Classes to average over; default: the classes present in
            ``labels``. Every class given must occur in ``labels``.

    Returns:
        The accuracy as a fraction in ``[0, 1]``.

    Raises:
        ValueError: On empty or mismatched inputs, or a class in ``classes``
            without samples.

    Example:
        >>> per_class_accuracy(torch.tensor([0, 0, 1, 0]), torch.tensor([0, 0, 0, 1]))
        0.3333333333333333
    """
    labels = check_labels("labels", _as_tensor("labels", labels))
    predictions = _as_predictions("predictions", predictions).to(labels.device)
    if labels.numel() == 0:
        raise ValueError("Expected at least one label, got 0.")
    if predictions.shape != labels.shape:
        raise ValueError(
            f"Expected predictions of shape {tuple(labels.shape)} (as labels), "
            f"got {tuple(predictions.shape)}."
        )
    if classes is None:
        class_ids = torch.unique(labels)
    else:
        class_ids = check_labels("classes", _as_tensor("classes", classes)).to(labels.device)
        if class_ids.numel() == 0:
            raise ValueError("Expected at least one class in classes, got 0.")
    size = int(max(labels.max(), class_ids.max())) + 1
    totals = torch.bincount(labels, minlength=size)[class_ids]
    hits = torch.bincount(labels[predictions == labels], minlength=size)[class_ids]
    if bool((totals == 0).any()):
        missing = class_ids[totals == 0].tolist()
        raise ValueError(
            f"Expected every class in classes to occur in labels, got none of {missing}."
        )
    return float((hits.double() / totals.double()).mean())


def class_accuracies(predictions: TensorLike, labels: TensorLike, num_classes: int) -> list[float]:
    """Top-1 accuracy of each class ``0..num_classes-1`` (``nan`` for a class without samples).

    Their mean over the classes with samples is :func:`per_class_accuracy`.

    Example:
        >>> class_accuracies(torch.tensor([0, 0, 1, 0]), torch.tensor([0, 0, 0, 1]), 2)
        [0.6666666666666666, 0.0]
    """
    labels = check_labels("labels", _as_tensor("labels", labels), num_classes=num_classes)
    predictions = _as_predictions("predictions", predictions).to(labels.device)
    if predictions.shape != labels.shape:
        raise ValueError(
            f"Expected predictions of shape {tuple(labels.shape)} (as labels), "
            f"got {tuple(predictions.shape)}."
        )
    totals = torch.bincount(labels, minlength=num_classes).double()
    hits = torch.bincount(labels[predictions == labels], minlength=num_classes).double()
    return [
        float("nan") if total == 0 else float(hit / total)
        for hit, total in zip(hits, totals, strict=True)
    ]


def harmonic_mean(s: float, u: float) -> float:
    """Harmonic mean ``2 * s * u / (s + u)`` of seen and unseen accuracy; 0 if both are 0.

    Args:
        s: Seen accuracy, ``>= 0``.
        u: Unseen accuracy, ``>= 0``.

    Returns:
        ``H`` on the same scale as the inputs.

    Example:
        >>> round(harmonic_mean(0.5, 0.75), 6)
        0.6
    """
    s = check_real("s", s, minimum=0.0)
    u = check_real("u", u, minimum=0.0)
    return 0.0 if s + u == 0 else 2 * s * u / (s + u)


@dataclass(frozen=True)
class GZSLScores:
    """Generalized zero-shot scores, fractions in ``[0, 1]``.

    Attributes:
        S: Per-class accuracy on the seen test images, among all ``S + U`` classes.
        U: Per-class accuracy on the unseen test images, among all ``S + U`` classes.
        H: Harmonic mean of ``S`` and ``U``.
    """

    S: float
    U: float
    H: float
    #: With ``per_class``: each seen class's accuracy (local label order), else ``None``.
    seen_per_class: list[float] | None = field(default=None, repr=False)
    #: With ``per_class``: each unseen class's accuracy (local label order), else ``None``.
    unseen_per_class: list[float] | None = field(default=None, repr=False)


def gzsl_scores(
    logits_or_preds_seen: TensorLike,
    seen_labels: TensorLike,
    preds_unseen: TensorLike,
    unseen_labels: TensorLike,
    num_seen: int,
    *,
    per_class: bool = False,
) -> GZSLScores:
    """S, U and H of a GZSL classifier over ``num_seen + U`` classes.

    The classifier's outputs are ordered seen classes first: seen class ``c`` is
    output ``c`` and unseen class ``u`` is output ``num_seen + u``. Test labels
    are local: seen test labels in ``0..S-1``, unseen test labels in ``0..U-1``
    (they are shifted by ``num_seen`` here before comparison).

    Args:
        logits_or_preds_seen: Predictions ``[Ns]`` or scores ``[Ns, S+U]`` on the
            seen test images.
        seen_labels: Their labels ``[Ns]`` in ``0..S-1``.
        preds_unseen: Predictions ``[Nu]`` or scores ``[Nu, S+U]`` on the unseen
            test images.
        unseen_labels: Their labels ``[Nu]`` in ``0..U-1``.
        num_seen: Number of seen classes ``S``.
        per_class: Also give each class's accuracy (``seen_per_class``,
            ``unseen_per_class``); S and U are their means.

    Returns:
        :class:`GZSLScores` (fractions).

    Example:
        >>> gzsl_scores(torch.tensor([0, 3]), torch.tensor([0, 1]),
        ...             torch.tensor([2, 3]), torch.tensor([0, 1]), num_seen=2)
        GZSLScores(S=0.5, U=1.0, H=0.6666666666666666)
    """
    num_seen = check_int("num_seen", num_seen, minimum=1)
    seen_labels = check_labels(
        "seen_labels", _as_tensor("seen_labels", seen_labels), num_classes=num_seen
    )
    unseen_labels = check_labels("unseen_labels", _as_tensor("unseen_labels", unseen_labels))
    s = per_class_accuracy(logits_or_preds_seen, seen_labels)
    u = per_class_accuracy(preds_unseen, unseen_labels + num_seen)
    if not per_class:
        return GZSLScores(S=s, U=u, H=harmonic_mean(s, u))
    num_unseen = int(unseen_labels.max()) + 1
    seen_preds = _as_predictions("logits_or_preds_seen", logits_or_preds_seen)
    unseen_preds = _as_predictions("preds_unseen", preds_unseen) - num_seen  # -> 0..U-1
    return GZSLScores(
        S=s,
        U=u,
        H=harmonic_mean(s, u),
        seen_per_class=class_accuracies(seen_preds, seen_labels, num_seen),
        unseen_per_class=class_accuracies(unseen_preds, unseen_labels, num_unseen),
    )


def zsl_top1(preds: TensorLike, labels: TensorLike) -> float:
    """Conventional ZSL top-1 (T1): per-class accuracy among the unseen classes only.

    Args:
        preds: Predictions ``[N]`` in ``0..U-1`` (or scores ``[N, U]``) of a
            classifier over the unseen classes only.
        labels: Unseen test labels ``[N]`` in ``0..U-1``.

    Returns:
        T1 as a fraction in ``[0, 1]``.

    Example:
        >>> zsl_top1(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]))
        0.75
    """
    return per_class_accuracy(preds, labels)
