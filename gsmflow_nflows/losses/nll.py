"""Negative log-likelihood per dimension, the flow's main loss (GSMFlow, Sec. 3).

References:
    Chen et al., "GSMFlow: Generation Shifts Mitigating Flow for Generalized
    Zero-Shot Learning", IEEE Transactions on Multimedia, 2022.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gsmflow_nflows._checks import check_tensor


def nll_per_dim(noise: Tensor, logabsdet: Tensor) -> Tensor:
    """Negative log-likelihood per dimension under a standard normal base, constants dropped.

    ``mean(noise**2) / 2 - mean(logabsdet) / D``, the means taken over the batch
    and the dimensions, with ``D`` the number of dimensions of one sample. This is
    the loss of GSMFlow's reference code.

    Relation to nflows: for a ``Flow`` with a ``StandardNormal`` base and
    ``noise, logabsdet = flow._transform(x, context=flow._embedding_net(a))``,
    ``-flow.log_prob(x, context=a).mean() / D == nll_per_dim(noise, logabsdet)
    + 0.5 * log(2 * pi)``: the two differ by the constant dropped here.

    Args:
        noise: The flow's output ``z``, shape ``[B, *event_shape]`` (``D`` is the
            product of ``event_shape``).
        logabsdet: ``log|det dz/dx|`` per sample, shape ``[B]``.

    Returns:
        A scalar tensor (differentiable).

    Raises:
        TypeError: If an argument is not a tensor.
        ValueError: If the shapes do not match.

    Example:
        >>> z, logabsdet = torch.zeros(4, 8), torch.zeros(4)
        >>> float(nll_per_dim(z, logabsdet))
        0.0
    """
    check_tensor("noise", noise)
    check_tensor("logabsdet", logabsdet)
    if noise.dim() < 2:
        raise ValueError(f"Expected noise of shape [B, D, ...], got shape {tuple(noise.shape)}.")
    batch = noise.shape[0]
    if tuple(logabsdet.shape) != (batch,):
        raise ValueError(
            f"Expected logabsdet of shape ({batch},), got shape {tuple(logabsdet.shape)}."
        )
    if batch == 0:
        raise ValueError("Expected a non-empty batch, got 0 samples.")
    dims = noise[0].numel()
    return torch.mean(noise**2) / 2 - torch.mean(logabsdet) / dims
