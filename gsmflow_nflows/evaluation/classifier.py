"""The softmax classifier trained on real seen + generated unseen features.

As in the GSMFlow evaluation code: ``Linear(D, C) + LogSoftmax``, Xavier-normal
weights, zero bias, Adam with ``betas=(0.5, 0.999)``, NLL loss.

References:
    Chen et al., "GSMFlow: Generation Shifts Mitigating Flow for Generalized
    Zero-Shot Learning", IEEE Transactions on Multimedia, 2022.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gsmflow_nflows._checks import (
    check_callable,
    check_generator,
    check_int,
    check_labels,
    check_matrix,
    check_positive,
    check_real,
)
from gsmflow_nflows.runtime import keep_global_rng, randperm

#: Learning-rate schedules of :func:`train_softmax_classifier`.
LR_SCHEDULES = ("constant", "cosine")


class SoftmaxClassifier(nn.Module):
    """``LogSoftmax(Linear(D, C)(x))`` with Xavier-normal weight and zero bias.

    Args:
        in_features: Feature dimension ``D``.
        num_classes: Number of classes ``C``.
        generator: Source of the weight initialisation; torch's global RNG is
            then left as it was. ``None`` uses the global RNG. The parameters are
            created on the generator's device.

    Example:
        >>> clf = SoftmaxClassifier(8, 3, generator=torch.Generator().manual_seed(0))
        >>> log_probs = clf(torch.randn(2, 8))
        >>> log_probs.shape, torch.allclose(log_probs.exp().sum(1), torch.ones(2))
        (torch.Size([2, 3]), True)
    """

    def __init__(
        self, in_features: int, num_classes: int, generator: torch.Generator | None = None
    ) -> None:
        super().__init__()
        in_features = check_int("in_features", in_features, minimum=1)
        num_classes = check_int("num_classes", num_classes, minimum=1)
        check_generator(generator)
        device = generator.device if generator is not None else None
        with keep_global_rng(device, enabled=generator is not None):  # Linear's own init
            self.linear = nn.Linear(in_features, num_classes, device=device)
        nn.init.xavier_normal_(self.linear.weight, generator=generator)
        nn.init.zeros_(self.linear.bias)

    def forward(self, inputs: Tensor) -> Tensor:
        """Log-probabilities ``[N, C]`` of features ``[N, D]``."""
        return F.log_softmax(self.linear(inputs), dim=1)


EpochCallback = Callable[[int, SoftmaxClassifier], None]


def classifier_epochs(num_samples: int, batch_size: int, epochs: int, min_steps: int = 0) -> int:
    """Epochs a classifier trains: ``epochs``, or more when that gives under ``min_steps`` steps.

    One epoch is ``ceil(N / min(batch_size, N))`` Adam steps. A fixed epoch count
    makes the number of steps an accident of the data size (20 epochs of a
    463-sample set at batch 1200 are 20 steps, and the classifier never trains);
    the floor makes every dataset get at least ``min_steps`` steps. With the
    published settings at the real datasets' sizes the floor of 1,000 never binds
    (aPY: 95 steps an epoch x 20 epochs).

    Args:
        num_samples: Training set size ``N >= 1``.
        batch_size: Batch size ``>= 1`` (clamped to ``N``).
        epochs: The configured epochs ``>= 1``.
        min_steps: The floor on optimizer steps ``>= 0``.

    Returns:
        The number of epochs.

    Example:
        >>> classifier_epochs(463, 1200, 20, min_steps=1000)  # one step an epoch
        1000
        >>> classifier_epochs(113_932, 1200, 20, min_steps=1000)  # aPY: 1,900 steps already
        20
    """
    num_samples = check_int("num_samples", num_samples, minimum=1)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    epochs = check_int("epochs", epochs, minimum=1)
    min_steps = check_int("min_steps", min_steps, minimum=0)
    per_epoch = -(-num_samples // min(batch_size, num_samples))
    return max(epochs, -(-min_steps // per_epoch))


def train_softmax_classifier(
    train_features: Tensor,
    train_labels: Tensor,
    num_classes: int,
    *,
    lr: float,
    batch_size: int,
    epochs: int,
    min_steps: int = 0,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.5, 0.999),
    generator: torch.Generator | None = None,
    on_epoch: EpochCallback | None = None,
    sample_weights: Tensor | None = None,
    lr_schedule: str = "constant",
) -> SoftmaxClassifier:
    """Train a :class:`SoftmaxClassifier` with Adam and the NLL loss.

    Each epoch draws one permutation of the training set with ``generator`` and
    visits it in ``ceil(N / batch_size)`` slices (the last may be smaller), so
    every sample is seen once per epoch. A ``batch_size`` larger than ``N`` is
    clamped to ``N`` (one full batch per epoch; the reference code crashed here).
    It trains :func:`classifier_epochs` epochs: ``epochs``, raised so that there
    are at least ``min_steps`` optimizer steps. The classifier lives on the
    features' device and dtype.

    Args:
        train_features: Training features ``[N, D]``.
        train_labels: Labels ``[N]`` in ``0..num_classes-1``.
        num_classes: Number of outputs ``C``.
        lr: Adam learning rate, ``> 0``.
        batch_size: Batch size, ``>= 1``.
        epochs: Number of epochs, ``>= 1`` (more when ``min_steps`` asks for them).
        min_steps: Floor on the number of optimizer steps, ``>= 0``.
        weight_decay: Adam's L2 penalty on the weights and bias, ``>= 0``.
        betas: Adam betas, each in ``[0, 1)``.
        generator: Source of the initialisation and the shuffling (a CPU
            generator works for any device); ``None`` uses torch's global RNG.
        on_epoch: Called as ``on_epoch(epoch, classifier)`` after every epoch
            (``epoch`` counts from 0); used to score each epoch.
        sample_weights: ``[N]`` non-negative weights of the samples in the loss, or
            ``None`` (all 1). A batch's loss is ``sum(w_i * nll_i) / (B * mean(w))``,
            an unbiased estimate of the weighted mean loss over the whole set, so
            that ``weight_decay`` keeps its meaning; weights that are all equal give
            exactly the unweighted loss.
        lr_schedule: ``"constant"`` (the reference's) or ``"cosine"``: the learning
            rate falls from ``lr`` to 0 along a half cosine over all the steps, so the
            last iterate is the optimum of the (convex, with ``weight_decay`` strictly
            convex) loss rather than an Adam iterate still moving by about ``lr``.

    Returns:
        The trained classifier.

    Example:
        >>> x, y = torch.randn(30, 8), torch.arange(30) % 3
        >>> clf = train_softmax_classifier(
        ...     x, y, 3, lr=1e-3, batch_size=64, epochs=2, generator=torch.Generator()
        ... )
        >>> predict(clf, x).shape
        torch.Size([30])
    """
    num_classes = check_int("num_classes", num_classes, minimum=1)
    lr = check_positive("lr", lr)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    epochs = check_int("epochs", epochs, minimum=1)
    min_steps = check_int("min_steps", min_steps, minimum=0)
    weight_decay = check_real("weight_decay", weight_decay, minimum=0.0)
    if not isinstance(betas, tuple | list) or len(betas) != 2:
        raise ValueError(f"Expected betas to be a pair of floats, got {betas!r}.")
    for index, beta in enumerate(betas):
        if check_real(f"betas[{index}]", beta, minimum=0.0) >= 1.0:
            raise ValueError(f"Expected 0 <= betas[{index}] < 1, got {beta}.")
    check_generator(generator)
    check_callable("on_epoch", on_epoch)
    if lr_schedule not in LR_SCHEDULES:
        raise ValueError(
            f"Unknown lr_schedule {lr_schedule!r}; choose from {', '.join(LR_SCHEDULES)}."
        )
    train_features = check_matrix("train_features", train_features)
    num_samples = train_features.shape[0]
    if num_samples == 0:
        raise ValueError("Expected at least one training sample, got 0.")
    train_labels = check_labels(
        "train_labels", train_labels, length=num_samples, num_classes=num_classes
    ).to(train_features.device)
    weights = _check_weights(sample_weights, train_features)

    classifier = SoftmaxClassifier(train_features.shape[1], num_classes, generator=generator)
    classifier = classifier.to(device=train_features.device, dtype=train_features.dtype)
    optimizer = torch.optim.Adam(
        classifier.parameters(),
        lr=lr,
        betas=(float(betas[0]), float(betas[1])),
        weight_decay=weight_decay,
        foreach=True,  # one multi-tensor step, not a Python loop per tensor
    )
    epochs = classifier_epochs(num_samples, batch_size, epochs, min_steps)
    batch_size = min(batch_size, num_samples)
    scheduler = None
    if lr_schedule == "cosine":
        total = epochs * -(-num_samples // batch_size)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))
        )
    for epoch in range(epochs):
        classifier.train()
        order = randperm(num_samples, generator, train_features.device)
        for start in range(0, num_samples, batch_size):
            batch = order[start : start + batch_size]
            log_probs = classifier(train_features[batch])
            if weights is None:
                loss = F.nll_loss(log_probs, train_labels[batch])
            else:
                losses = F.nll_loss(log_probs, train_labels[batch], reduction="none")
                loss = (weights[batch] * losses).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
        classifier.eval()
        if on_epoch is not None:
            on_epoch(epoch, classifier)
    return classifier


def _check_weights(sample_weights: Tensor | None, features: Tensor) -> Tensor | None:
    """``sample_weights`` divided by their mean, on the features' device; ``None`` if all equal."""
    if sample_weights is None:
        return None
    if not isinstance(sample_weights, Tensor) or sample_weights.shape != features.shape[:1]:
        shape = getattr(sample_weights, "shape", type(sample_weights).__name__)
        raise ValueError(
            f"Expected sample_weights of shape [{features.shape[0]}] (one per training "
            f"sample), got {shape}."
        )
    weights = sample_weights.to(features.device, features.dtype)
    if not bool(torch.isfinite(weights).all()) or bool((weights < 0).any()):
        raise ValueError("sample_weights must be finite and >= 0.")
    mean = weights.mean()
    if not float(mean) > 0:
        raise ValueError("sample_weights must not all be 0.")
    if bool((weights == weights[0]).all()):
        return None
    return weights / mean


def generated_sample_weights(
    num_real: int,
    num_generated: int,
    generated_weight: float,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor | None:
    """Loss weights of a classifier set of ``num_real`` real rows, then ``num_generated`` generated.

    Real rows weigh 1, generated ones ``generated_weight``; ``None`` (no weighting)
    when ``generated_weight`` is 1.

    Example:
        >>> generated_sample_weights(2, 3, 0.5).tolist()
        [1.0, 1.0, 0.5, 0.5, 0.5]
        >>> generated_sample_weights(2, 3, 1.0) is None
        True
    """
    generated_weight = check_positive("generated_weight", generated_weight)
    if generated_weight == 1.0:
        return None
    weights = torch.ones(num_real + num_generated, device=device, dtype=dtype)
    weights[num_real:] = generated_weight
    return weights


def gzsl_training_set(
    seen_features: Tensor,
    seen_labels: Tensor,
    generated_features: Tensor,
    generated_labels: Tensor,
    num_seen: int,
    generated_weight: float = 1.0,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """The GZSL classifier's training set: real seen rows, then generated unseen rows.

    Seen labels stay ``0..S-1``; generated labels ``0..U-1`` become ``S..S+U-1``.
    Everything is put on the seen features' device and dtype, with the rows' loss
    weights from :func:`generated_sample_weights`.

    Returns:
        ``(features, labels, sample_weights)`` for :func:`train_softmax_classifier`.

    Example:
        >>> x, y, w = gzsl_training_set(torch.zeros(2, 3), torch.tensor([0, 1]),
        ...                             torch.ones(3, 3), torch.tensor([0, 0, 1]), 2, 0.5)
        >>> y.tolist(), w.tolist()
        ([0, 1, 2, 2, 3], [1.0, 1.0, 0.5, 0.5, 0.5])
    """
    device, dtype = seen_features.device, seen_features.dtype
    features = torch.cat([seen_features, generated_features.to(device, dtype)])
    labels = torch.cat([seen_labels.to(device), generated_labels.to(device) + num_seen])
    weights = generated_sample_weights(
        seen_features.shape[0],
        generated_features.shape[0],
        generated_weight,
        device=device,
        dtype=dtype,
    )
    return features, labels, weights


def predict(classifier: nn.Module, features: Tensor, batch_size: int = 8192) -> Tensor:
    """Predicted class ids (argmax), batched, under ``torch.inference_mode``.

    Args:
        classifier: A module mapping ``[B, D]`` to scores ``[B, C]``.
        features: Features ``[N, D]`` on the classifier's device.
        batch_size: Rows per forward pass, ``>= 1``.

    Returns:
        A ``LongTensor`` ``[N]`` on the features' device.

    Example:
        >>> clf = SoftmaxClassifier(8, 3)
        >>> predict(clf, torch.randn(5, 8)).shape
        torch.Size([5])
    """
    if not isinstance(classifier, nn.Module):
        raise TypeError(f"Expected classifier to be an nn.Module, got {type(classifier).__name__}.")
    features = check_matrix("features", features, finite=False)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    with torch.inference_mode():
        chunks = [
            classifier(features[start : start + batch_size]).argmax(dim=1)
            for start in range(0, features.shape[0], batch_size)
        ]
    if not chunks:
        return torch.empty(0, dtype=torch.long, device=features.device)
    return torch.cat(chunks).to(features.device)
