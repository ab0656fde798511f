"""Visual perturbation of the training features (GSMFlow, Sec. 3).

References:
    Chen et al., "GSMFlow: Generation Shifts Mitigating Flow for Generalized
    Zero-Shot Learning", IEEE Transactions on Multimedia, 2022.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gsmflow_nflows._checks import check_generator, check_real, check_tensor
from gsmflow_nflows.runtime import draw


class VisualPerturbation:
    """``x + pi * eps * m`` with ``eps ~ N(0, I)`` and ``m`` a Bernoulli keep-mask.

    The mask has shape ``[1, *x.shape[1:]]``: ONE mask per call, drawn per
    feature dimension and shared by every sample of the batch. This is what the
    authors' code does (``mask = FloatTensor(2048).uniform_() > dropout``, then
    broadcast over the batch). A dimension is kept with probability
    ``1 - dropout``; kept noise is not rescaled. With ``dropout == 0`` no mask is
    drawn at all, and with ``pi == 0`` the input is returned as is (same tensor,
    no random numbers consumed).

    Args:
        pi: Noise scale, ``>= 0`` (published: 0.02 to 0.15).
        dropout: Probability of dropping a dimension from the noise, in ``[0, 1)``
            (0 in all published runs).

    Example:
        >>> perturb = VisualPerturbation(pi=0.1)
        >>> x = torch.zeros(4, 8)
        >>> perturb(x, generator=torch.Generator().manual_seed(0)).shape
        torch.Size([4, 8])
    """

    def __init__(self, pi: float, dropout: float = 0.0) -> None:
        self.pi = check_real("pi", pi, minimum=0.0)
        self.dropout = check_real("dropout", dropout, minimum=0.0)
        if self.dropout >= 1.0:
            raise ValueError(f"Expected 0 <= dropout < 1, got {self.dropout}.")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(pi={self.pi}, dropout={self.dropout})"

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Perturb a batch.

        Args:
            x: Features, shape ``[B, *event_shape]``, floating point.
            generator: Source of randomness (any device: numbers are drawn on its
                device and moved to ``x``'s); ``None`` uses torch's global RNG.

        Returns:
            The perturbed batch, same shape, device and dtype as ``x``.

        Raises:
            TypeError: If ``x`` is not a floating-point tensor or ``generator`` is
                not a ``torch.Generator``.
            ValueError: If ``x`` has no batch dimension.
        """
        check_tensor("x", x)
        check_generator(generator)
        if x.dim() < 2:
            raise ValueError(f"Expected x of shape [B, D, ...], got shape {tuple(x.shape)}.")
        if not x.is_floating_point():
            raise TypeError(f"Expected x to be floating point, got dtype {x.dtype}.")
        if self.pi == 0.0:
            return x
        noise = draw("normal", tuple(x.shape), x, generator)
        if self.dropout > 0.0:
            keep = draw("uniform", (1, *x.shape[1:]), x, generator) >= self.dropout
            noise = noise * keep
        return x + self.pi * noise
