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

import torch
from nflows.transforms.base import Transform
from torch import Tensor

from gsmflow_nflows._checks import check_matrix, check_positive, check_same_batch

__all__ = ["SemanticShiftTransform", "fit_ridge_map"]


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


class SemanticShiftTransform(Transform):
    """``y = x - mu(a)``: subtract the semantic mean of the class vector ``a`` (the context).

    ``mu(a) = a W + b`` (a linear map, e.g. from :func:`fit_ridge_map`), except
    for the class vectors given in ``known_vectors``, whose mean is the stored
    ``known_means`` row: a class with training images is centred on its own
    empirical mean, so the residual the flow learns is the within-class spread
    of every class (one mode), and a class without images (unseen) gets the
    mean the linear map extrapolates to. A context row counts as known when it
    equals a stored vector exactly.

    Forward goes data -> noise, as in nflows; the log-determinant is 0. All are
    buffers (fitted once and saved with the module), not trained: a learned map
    would fit the few seen vectors exactly and lose the ridge penalty that makes
    it extrapolate.

    Args:
        weight: ``[A, D]``, the map from a class vector to a mean.
        bias: ``[D]``.
        known_vectors: ``[K, A]`` class vectors with an empirical mean, or ``None``.
        known_means: ``[K, D]`` their means (with ``known_vectors``).

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
            equal = (context.unsqueeze(1) == self.known_vectors.unsqueeze(0)).all(dim=2)
            found = equal.any(dim=1, keepdim=True)
            means = torch.where(found, self.known_means[equal.to(torch.int8).argmax(dim=1)], means)
        return means

    def _shift(self, inputs: Tensor, context: Tensor | None, sign: float) -> tuple[Tensor, Tensor]:
        if context is None:
            raise ValueError(
                f"SemanticShiftTransform needs the class vectors [batch, {self.weight.shape[0]}] "
                "as context; got None."
            )
        check_matrix("inputs", inputs, columns=self.features, finite=False)
        check_same_batch(inputs, context)
        outputs = inputs + sign * self.mean(context).to(inputs.dtype)
        return outputs, inputs.new_zeros(inputs.shape[0])

    def forward(self, inputs: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._shift(inputs, context, -1.0)

    def inverse(self, inputs: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._shift(inputs, context, 1.0)
