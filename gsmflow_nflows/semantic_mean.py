"""A linear semantic mean: the class mean regressed from the class vector, as an nflows transform.

GSMFlow conditions every coupling on the class vector. With few seen classes
(a handful of distinct attribute vectors) those couplings learn the seen
vectors and nothing between them, and features sampled for an unseen vector
land anywhere. The alternative offered here (``conditioning="mean"`` in
:func:`gsmflow_nflows.build_gsmflow`, not in the paper) lets the class vector
enter through one ridge regression ``mu(a) = a W + b`` of the seen class means
only, and the couplings model, without the class, what the class vector does
not explain: ``x = mu(a) + f^{-1}(z)``. Classes with training images are
centred on their own empirical means, so ``f`` learns one pooled within-class
distribution rather than a mixture of the seen classes' offsets from the
regression line. A linear map extrapolates to a new
attribute vector as well as ridge regression does; the flow keeps a full,
non-Gaussian within-class distribution.

References:
    Chen et al., "GSMFlow: Generation Shifts Mitigating Flow for Generalized
    Zero-Shot Learning", IEEE Transactions on Multimedia, 2022.
"""

from __future__ import annotations

from typing import Any

import torch
from nflows.transforms.base import Transform
from torch import Tensor

from gsmflow_nflows._checks import check_matrix, check_positive, check_same_batch
from gsmflow_nflows.losses.prototype import class_means

__all__ = [
    "SemanticShiftTransform",
    "fit_ridge_map",
    "pooled_within_class_std",
    "residual_scale",
    "residual_shrinkage",
]


def float64_device(device: torch.device) -> torch.device:
    """Where float64 solves run: ``device``, or the CPU on MPS (which has no float64)."""
    return torch.device("cpu") if device.type == "mps" else device


def fit_ridge_map(
    embeddings: Tensor, targets: Tensor, *, alpha: float = 1.0
) -> tuple[Tensor, Tensor]:
    """Ridge regression ``targets ~ embeddings @ weight + bias`` in closed form (float64).

    The intercept is not penalised (both sides are centred first):
    ``weight = (A_c^T A_c + alpha I)^{-1} A_c^T T_c``, ``bias = mean(T) - mean(A) @ weight``.

    Args:
        embeddings: ``[S, A]`` class vectors.
        targets: ``[S, D]`` what to predict from them (e.g. the class means).
        alpha: The ridge penalty, ``> 0``.

    Returns:
        ``(weight [A, D], bias [D])`` in float64 on the targets' device.

    Example:
        >>> a = torch.tensor([[0.0], [1.0], [2.0]])
        >>> weight, bias = fit_ridge_map(a, 2 * a + 1, alpha=1e-9)
        >>> weight.round().tolist(), bias.round().tolist()
        ([[2.0]], [1.0])
    """
    targets = check_matrix("targets", targets)
    embeddings = check_matrix("embeddings", embeddings, rows=targets.shape[0])
    alpha = check_positive("alpha", alpha)
    device = targets.device
    solve_device = float64_device(device)
    a = embeddings.to(solve_device, torch.float64)
    t = targets.to(solve_device, torch.float64)
    a_mean, t_mean = a.mean(dim=0), t.mean(dim=0)
    a_c, t_c = a - a_mean, t - t_mean
    eye = torch.eye(a.shape[1], dtype=torch.float64, device=solve_device)
    weight = torch.linalg.solve(a_c.T @ a_c + alpha * eye, a_c.T @ t_c)
    bias = t_mean - a_mean @ weight
    return weight.to(device), bias.to(device)


def pooled_within_class_std(features: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """Per-dimension pooled within-class standard deviation, in float64.

    ``sqrt(sum_i (x_i - mean_{y_i})^2 / (N - C))`` per dimension: the deviations
    of every sample from its own class mean, pooled over classes (``N - C``
    degrees of freedom; ``N`` when ``N == C``).

    Args:
        features: Features ``[N, D]``.
        labels: Their classes ``[N]`` in ``0..num_classes-1``; every class must occur.
        num_classes: ``C``.

    Returns:
        ``[D]`` float64 standard deviations, on the features' device.

    Example:
        >>> x = torch.tensor([[0.0], [2.0], [4.0], [6.0]])
        >>> pooled_within_class_std(x, torch.tensor([0, 0, 1, 1]), 2).tolist()  # sqrt(4 / 2)
        [1.4142135623730951]
    """
    deviations = _within_class_residuals(features, labels, num_classes)
    dof = deviations.shape[0] - num_classes
    dof = dof if dof > 0 else deviations.shape[0]
    return (deviations.square().sum(dim=0) / dof).sqrt().to(features.device)


def _within_class_residuals(features: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """``x_i - mean_{y_i}`` in float64 (on the CPU for MPS), every class's own mean removed."""
    x = features.to(float64_device(features.device), torch.float64)
    labels = labels.to(x.device).long()
    return x - class_means(x, labels, num_classes)[labels]


def residual_scale(
    features: Tensor, labels: Tensor, num_classes: int, *, floor: float = 0.01
) -> Tensor:
    """The residual's unit: :func:`pooled_within_class_std`, floored.

    Each dimension's pooled within-class standard deviation, raised to at least
    ``floor`` times their root mean square: a dimension that (almost) never
    varies within a class (a pixel that is always 0) would otherwise ask the
    flow for an unbounded density, and its samples would spread far wider than
    the data.

    Args:
        features: ``[N, D]`` training features.
        labels: ``[N]`` their classes in ``0..num_classes-1``.
        num_classes: the number of classes.
        floor: the smallest scale, relative to the root-mean-square one, ``> 0``.

    Returns:
        ``[D]`` scales in float64 on the features' device, all ``> 0``.

    Raises:
        ValueError: if no dimension varies within any class.

    Example:
        >>> x = torch.tensor([[0.0, 1.0], [0.0, 3.0], [0.0, 5.0], [0.0, 7.0]])
        >>> residual_scale(x, torch.tensor([0, 0, 1, 1]), 2).tolist()
        [0.01, 1.4142135623730951]
    """
    features = check_matrix("features", features)
    floor = check_positive("floor", floor)
    sigma = pooled_within_class_std(features, labels, num_classes)
    rms = float(sigma.square().mean().sqrt())
    if not rms > 0:
        raise ValueError("The features do not vary within any class; there is nothing to model.")
    return sigma.clamp(min=floor * rms)


def residual_shrinkage(
    features: Tensor,
    labels: Tensor,
    num_classes: int,
    scale: Tensor,
    *,
    folds: int = 5,
    grid: int = 21,
) -> float:
    """How far a new class's residual is from the seen classes' shared shape: ``lambda`` in [0, 1].

    The flow learns one within-class distribution pooled over the seen
    classes and lends it to every unseen class. Whether that shape carries
    over to a class it was not fitted on is a property of the data, measured
    here by leaving classes out: the residuals ``r = (x - mean_y) / scale``
    of the seen classes are split by class into ``folds`` groups; for each
    group, the covariance ``Sigma`` of the other groups' residuals is shrunk
    towards the identity (the per-dimension Gaussian of the linear-Gaussian
    model), ``(1 - lambda) Sigma + lambda I``, and the held-out classes'
    Gaussian log-likelihood is summed over ``grid`` values of ``lambda``.
    The best ``lambda`` is returned: 0 when the shared structure predicts a
    held-out class as well as it fits the others, 1 when none of it carries
    over. Sampling then blends the flow's residual with independent noise in
    that proportion (see :class:`SemanticShiftTransform`).

    Args:
        features: ``[N, D]`` training features.
        labels: ``[N]`` their classes in ``0..num_classes-1`` (at least 2 classes).
        num_classes: the number of classes.
        scale: ``[D]`` the residual's units (:func:`residual_scale`).
        folds: class groups held out in turn, at most ``num_classes``.
        grid: values of ``lambda`` tried, evenly spaced over [0, 1].

    Returns:
        ``lambda`` as a float.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> labels = torch.arange(4).repeat_interleave(50)
        >>> shared = torch.randn(200, 1, generator=g) * torch.ones(1, 6)  # one shared direction
        >>> x = shared + 0.1 * torch.randn(200, 6, generator=g)
        >>> residual_shrinkage(x, labels, 4, residual_scale(x, labels, 4))
        0.0
        >>> residual_shrinkage(torch.randn(200, 6, generator=g), labels, 4, torch.ones(6)) > 0.9
        True
    """
    features = check_matrix("features", features)
    if num_classes < 2:
        raise ValueError(f"residual_shrinkage needs at least 2 classes, got {num_classes}.")
    folds = min(int(folds), num_classes)
    residuals = _within_class_residuals(features, labels, num_classes)
    device = residuals.device
    residuals = residuals / scale.to(device, torch.float64)
    labels = labels.to(device).long()
    lambdas = torch.linspace(0.0, 1.0, grid, dtype=torch.float64, device=device)
    total = torch.zeros(grid, dtype=torch.float64, device=device)
    group = labels % folds
    for fold in range(folds):
        held = group == fold
        rest = residuals[~held]
        if rest.shape[0] == 0 or not bool(held.any()):
            continue
        eigenvalues, vectors = torch.linalg.eigh(rest.T @ rest / rest.shape[0])
        projected = (residuals[held] @ vectors).square().mean(dim=0)  # [D]
        variances = (1.0 - lambdas[:, None]) * eigenvalues.clamp(min=0.0) + lambdas[:, None]
        variances = variances.clamp(min=1e-12)
        total -= 0.5 * (variances.log() + projected / variances).sum(dim=1)
    return float(lambdas[int(torch.argmax(total))])


class SemanticShiftTransform(Transform):
    """``y = (x - mu(a)) / sigma``: centre on the semantic mean of the class vector ``a``.

    ``mu(a) = a W + b`` (a linear map, e.g. from :func:`fit_ridge_map`), except
    for the class vectors given in ``known_vectors``, whose mean is the stored
    ``known_means`` row: a class with training images is centred on its own
    empirical mean, so the residual the flow learns is the within-class spread
    of every class (one mode), and a class without images (unseen) gets the
    mean the linear map extrapolates to. A context row counts as known when it
    equals a stored vector exactly.

    ``sigma`` (``scale``, e.g. from :func:`residual_scale`; default ones) puts
    the residual in within-class units: the couplings, which start near the
    identity, then start from the linear-Gaussian model ``N(mu(a),
    diag(sigma^2))`` and only learn what departs from it, and a dimension with
    a spread far below the others' does not need a large log-scale.

    Forward goes data -> noise, as in nflows; the log-determinant is
    ``-sum(log sigma)`` (a constant). All are buffers (fitted once and saved
    with the module), not trained: a learned map would fit the few seen vectors
    exactly and lose the ridge penalty that makes it extrapolate.

    Args:
        weight: ``[A, D]``, the map from a class vector to a mean.
        bias: ``[D]``.
        known_vectors: ``[K, A]`` class vectors with an empirical mean, or ``None``.
        known_means: ``[K, D]`` their means (with ``known_vectors``).
        scale: ``[D]`` positive per-dimension units ``sigma`` of the residual.
        shrinkage: ``lambda`` in [0, 1] (e.g. :func:`residual_shrinkage`), used
            only by :meth:`blend` when sampling classes without an empirical mean.

    Example:
        >>> shift = SemanticShiftTransform(torch.ones(2, 3), torch.zeros(3))
        >>> y, logabsdet = shift(torch.zeros(1, 3), context=torch.tensor([[1.0, 2.0]]))
        >>> y.tolist(), logabsdet.tolist()
        ([[-3.0, -3.0, -3.0]], [0.0])
        >>> known = SemanticShiftTransform(torch.ones(2, 3), torch.zeros(3),
        ...     known_vectors=torch.tensor([[1.0, 2.0]]), known_means=torch.full((1, 3), 5.0))
        >>> known.mean(torch.tensor([[1.0, 2.0], [1.0, 1.0]])).tolist()
        [[5.0, 5.0, 5.0], [2.0, 2.0, 2.0]]
    """

    def __init__(
        self,
        weight: Tensor,
        bias: Tensor,
        *,
        known_vectors: Tensor | None = None,
        known_means: Tensor | None = None,
        scale: Tensor | None = None,
        shrinkage: float = 0.0,
    ) -> None:
        super().__init__()
        weight = check_matrix("weight", weight)
        dim, features = weight.shape
        bias = check_matrix("bias", bias.reshape(1, -1), columns=features).reshape(-1)
        if (known_vectors is None) != (known_means is None):
            raise ValueError("Give known_vectors and known_means together, or neither.")
        if known_vectors is None:
            known_vectors, known_means = weight.new_zeros(0, dim), weight.new_zeros(0, features)
        known_vectors = check_matrix("known_vectors", known_vectors, columns=dim)
        known_means = check_matrix(
            "known_means", known_means, columns=features, rows=known_vectors.shape[0]
        )
        self.register_buffer("weight", weight.clone())
        self.register_buffer("bias", bias.clone())
        self.register_buffer("known_vectors", known_vectors.to(weight.dtype).clone())
        self.register_buffer("known_means", known_means.to(weight.dtype).clone())
        if scale is None:
            scale = weight.new_ones(features)
        scale = check_matrix("scale", scale.reshape(1, -1), columns=features).reshape(-1)
        if not bool((scale > 0).all()):
            raise ValueError("scale must be positive in every dimension.")
        self.register_buffer("scale", scale.to(weight.dtype).clone())
        if not 0.0 <= float(shrinkage) <= 1.0:
            raise ValueError(f"shrinkage must be in [0, 1], got {shrinkage!r}.")
        self.register_buffer("shrinkage", weight.new_tensor(float(shrinkage)))

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        # Model files written before ``scale`` existed were unscaled: keep them loading.
        state_dict.setdefault(prefix + "scale", torch.ones_like(self.scale))
        state_dict.setdefault(prefix + "shrinkage", torch.zeros_like(self.shrinkage))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def features(self) -> int:
        """The data dimension ``D``."""
        return int(self.weight.shape[1])

    def mean(self, context: Tensor) -> Tensor:
        """The semantic mean of class vectors ``[B, A]`` -> ``[B, D]``."""
        check_matrix("context", context, columns=self.weight.shape[0])
        context = context.to(self.weight.dtype)
        means = context @ self.weight + self.bias
        if self.known_vectors.shape[0]:
            equal = self._equal(context)
            found = equal.any(dim=1, keepdim=True)
            means = torch.where(found, self.known_means[equal.to(torch.int8).argmax(dim=1)], means)
        return means

    def _equal(self, context: Tensor) -> Tensor:
        return (context.unsqueeze(1) == self.known_vectors.unsqueeze(0)).all(dim=2)

    def is_known(self, context: Tensor) -> Tensor:
        """``[B]`` booleans: which class vectors have a stored empirical mean."""
        check_matrix("context", context, columns=self.weight.shape[0])
        if not self.known_vectors.shape[0]:
            return torch.zeros(context.shape[0], dtype=torch.bool, device=context.device)
        return self._equal(context.to(self.weight.dtype)).any(dim=1)

    def blend(self, samples: Tensor, context: Tensor, noise: Tensor) -> Tensor:
        """Samples of classes without an empirical mean, their residual shrunk towards noise.

        ``mu + sqrt(1 - lambda) (x - mu) + sqrt(lambda) sigma eps`` for the
        classes whose vector is not known (``lambda`` = ``shrinkage``); known
        classes are returned as they are. With ``eps ~ N(0, I)`` the residual's
        covariance becomes ``(1 - lambda) Sigma + lambda diag(sigma^2)``: the
        flow's shape where it carries over to a new class, the linear-Gaussian
        model's where it does not.

        Args:
            samples: ``[C, n, D]`` flow samples, ``n`` for each of ``C`` classes.
            context: ``[C, A]`` the classes' vectors.
            noise: ``[C, n, D]`` standard normal draws.

        Returns:
            ``[C, n, D]``.

        Example:
            >>> shift = SemanticShiftTransform(torch.zeros(1, 2), torch.zeros(2), shrinkage=1.0)
            >>> shift.blend(torch.ones(1, 3, 2), torch.ones(1, 1), torch.zeros(1, 3, 2)).tolist()
            [[[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]]
        """
        lam = float(self.shrinkage)
        if lam == 0.0:
            return samples
        mean = self.mean(context).to(samples.dtype)[:, None]
        scale = self.scale.to(samples.dtype)
        blended = mean + (1.0 - lam) ** 0.5 * (samples - mean) + lam**0.5 * scale * noise
        unknown = ~self.is_known(context)
        return torch.where(unknown[:, None, None], blended, samples)

    def _shift(self, inputs: Tensor, context: Tensor | None, sign: float) -> tuple[Tensor, Tensor]:
        if context is None:
            raise ValueError(
                f"SemanticShiftTransform needs the class vectors [batch, {self.weight.shape[0]}] "
                "as context; got None."
            )
        check_matrix("inputs", inputs, columns=self.features, finite=False)
        check_same_batch(inputs, context)
        mean = self.mean(context).to(inputs.dtype)
        scale = self.scale.to(inputs.dtype)
        logabsdet = scale.log().sum().expand(inputs.shape[0])
        if sign < 0:
            return (inputs - mean) / scale, 0.0 - logabsdet
        return inputs * scale + mean, logabsdet.clone()

    def forward(self, inputs: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._shift(inputs, context, -1.0)

    def inverse(self, inputs: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._shift(inputs, context, 1.0)
