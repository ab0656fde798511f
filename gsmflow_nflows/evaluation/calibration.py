"""Calibrated stacking: subtract a constant from the seen classes' scores, chosen on validation.

A GZSL classifier trained on real seen and generated unseen features tends to
favour the seen classes. Chao et al. (2016) subtract a constant ``gamma`` from
every seen-class score before the argmax. ``gamma`` must be chosen without the
test set: here it maximises H on a validation split (validation-seen images and
validation-unseen classes). H is piecewise constant in ``gamma`` and changes only
where some image's best seen score minus its best unseen score crosses it, so
trying those margins finds the exact maximiser on the validation images.

References:
    Chao, Changpinyo, Gong and Sha, "An Empirical Study and Analysis of
    Generalized Zero-Shot Learning for Object Recognition in the Wild", ECCV 2016.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from gsmflow_nflows._checks import check_int, check_matrix, check_real
from gsmflow_nflows.data import GZSLData
from gsmflow_nflows.evaluation.classifier import gzsl_training_set, train_softmax_classifier
from gsmflow_nflows.evaluation.metrics import GZSLScores, gzsl_scores

__all__ = ["calibrated_predict", "choose_calibration", "choose_offset_on_validation"]

#: At most this many candidate offsets are tried (quantiles of the margins beyond it).
MAX_CANDIDATES = 512


def _scores(classifier: nn.Module, features: Tensor, batch_size: int = 8192) -> Tensor:
    with torch.inference_mode():
        return torch.cat(
            [
                classifier(features[start : start + batch_size])
                for start in range(0, features.shape[0], batch_size)
            ]
        )


def calibrated_predict(
    classifier: nn.Module, features: Tensor, num_seen: int, offset: float = 0.0
) -> Tensor:
    """Argmax over all classes after subtracting ``offset`` from the first ``num_seen`` scores.

    Args:
        classifier: Maps ``[B, D]`` features to ``[B, S + U]`` scores (seen outputs first).
        features: ``[N, D]`` features.
        num_seen: ``S``.
        offset: The calibration constant ``gamma`` (0: the plain argmax).

    Returns:
        Predicted output indices ``[N]``.

    Example:
        >>> clf = nn.Linear(2, 3, bias=False)
        >>> _ = clf.weight.data.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.9]]))
        >>> calibrated_predict(clf, torch.tensor([[0.0, 1.0]]), 2, 0.0).tolist()
        [1]
        >>> calibrated_predict(clf, torch.tensor([[0.0, 1.0]]), 2, 0.2).tolist()
        [2]
    """
    features = check_matrix("features", features, finite=False)
    num_seen = check_int("num_seen", num_seen, minimum=1)
    offset = check_real("offset", offset)
    scores = _scores(classifier, features).clone()
    scores[:, :num_seen] -= offset
    return scores.argmax(dim=1)


def choose_calibration(
    classifier: nn.Module,
    *,
    val_seen_features: Tensor,
    val_seen_labels: Tensor,
    val_unseen_features: Tensor,
    val_unseen_labels: Tensor,
    num_seen: int,
) -> tuple[float, GZSLScores]:
    """The offset ``gamma`` that maximises H on a validation split, and the scores it gives.

    Candidates are 0 and the midpoints between consecutive sorted margins
    (best seen score minus best unseen score of each validation image), so the
    maximum over all real offsets is found (up to :data:`MAX_CANDIDATES`
    quantiles on large splits). Ties go to the offset closest to 0.

    Args:
        classifier: The GZSL classifier trained on the validation split's training data.
        val_seen_features: Validation-seen images ``[Ns, D]``.
        val_seen_labels: Their labels in ``0..S-1``.
        val_unseen_features: Validation-unseen images ``[Nu, D]``.
        val_unseen_labels: Their labels in ``0..U-1``.
        num_seen: ``S``.

    Returns:
        ``(gamma, scores on the validation split with gamma)``.

    Example:
        >>> gamma, scores = choose_calibration(  # doctest: +SKIP
        ...     clf, val_seen_features=xs, val_seen_labels=ys,
        ...     val_unseen_features=xu, val_unseen_labels=yu, num_seen=5)
    """
    num_seen = check_int("num_seen", num_seen, minimum=1)
    seen = _scores(classifier, check_matrix("val_seen_features", val_seen_features))
    unseen = _scores(classifier, check_matrix("val_unseen_features", val_unseen_features))
    both = torch.cat([seen, unseen])
    margins = (both[:, :num_seen].max(1).values - both[:, num_seen:].max(1).values).double()
    margins = torch.sort(margins).values
    if margins.numel() > MAX_CANDIDATES:
        margins = torch.quantile(margins, torch.linspace(0, 1, MAX_CANDIDATES, dtype=margins.dtype))
    cuts = torch.cat([margins[:1] - 1, (margins[1:] + margins[:-1]) / 2, margins[-1:] + 1])
    candidates = torch.cat([torch.zeros(1, dtype=cuts.dtype, device=cuts.device), cuts])
    offsets = candidates[torch.argsort(candidates.abs(), stable=True)].tolist()
    best: tuple[float, GZSLScores] | None = None
    for offset in offsets:
        shift = torch.zeros(both.shape[1], dtype=both.dtype, device=both.device)
        shift[:num_seen] = offset
        scores = gzsl_scores(
            (seen - shift).argmax(1),
            val_seen_labels.to(seen.device),
            (unseen - shift).argmax(1),
            val_unseen_labels.to(seen.device),
            num_seen,
        )
        if best is None or scores.H > best[1].H:
            best = (float(offset), scores)
    assert best is not None  # candidates is never empty
    return best


def choose_offset_on_validation(
    val_data: GZSLData,
    generated_features: Tensor,
    generated_labels: Tensor,
    classifier_settings: dict[str, Any],
    *,
    generator: torch.Generator,
    generated_weight: float = 1.0,
) -> dict[str, float]:
    """Calibrated stacking's offset for any generator of unseen features, chosen on validation.

    Trains the GZSL classifier on ``val_data``'s training features plus the
    generated validation-unseen features (as every evaluation does) and returns
    the offset maximising validation H (:func:`choose_calibration`). The test
    set is not read. GSMFlow and the linear-Gaussian baseline both go through
    here, so their calibrated rows are chosen the same way.

    Args:
        val_data: The validation split (``train_loc``; ``val_loc`` classes unseen).
        generated_features: ``[Ng, D]`` generated features of its unseen classes.
        generated_labels: ``[Ng]`` their labels in ``0..U-1``.
        classifier_settings: The classifier's settings
            (``EvaluationConfig.classifier_settings()``).
        generator: Source of the classifier's initialisation and shuffling.
        generated_weight: Each generated feature's weight in the classifier's loss
            (``EvaluationConfig.generated_weight()``; a real one weighs 1).

    Returns:
        ``{"offset", "validation_H", "validation_H_uncalibrated"}``.

    Example:
        >>> chosen = choose_offset_on_validation(  # doctest: +SKIP
        ...     val, x, y, config.evaluation.classifier_settings(), generator=g)
    """
    device = generated_features.device
    features, labels, weights = gzsl_training_set(
        val_data.train_features.to(device),
        val_data.train_labels,
        generated_features,
        generated_labels,
        val_data.num_seen,
        generated_weight,
    )
    classifier = train_softmax_classifier(
        features,
        labels,
        val_data.num_seen + val_data.num_unseen,
        **classifier_settings,
        generator=generator,
        sample_weights=weights,
    )
    seen = val_data.test_seen_features.to(device)
    unseen = val_data.test_unseen_features.to(device)
    offset, scores = choose_calibration(
        classifier,
        val_seen_features=seen,
        val_seen_labels=val_data.test_seen_labels,
        val_unseen_features=unseen,
        val_unseen_labels=val_data.test_unseen_labels,
        num_seen=val_data.num_seen,
    )
    plain = gzsl_scores(
        calibrated_predict(classifier, seen, val_data.num_seen),
        val_data.test_seen_labels.to(device),
        calibrated_predict(classifier, unseen, val_data.num_seen),
        val_data.test_unseen_labels.to(device),
        val_data.num_seen,
    )
    return {"offset": offset, "validation_H": scores.H, "validation_H_uncalibrated": plain.H}
