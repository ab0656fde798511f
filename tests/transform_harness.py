"""One harness every transform we ship goes through.

Checks, against independent computations: output shape/dtype/finiteness, exact
inversion, forward and inverse log-dets summing to zero, the per-sample
log-det against ``slogdet`` of the autograd Jacobian in float64 (with weights
randomised away from the near-identity initialisation), that the context
changes the output, and that a ``torch.save``/``torch.load`` round trip of the
whole module after a forward pass gives the same outputs and log-dets.

Inputs are ``[batch, features]`` or ``[batch, *shape]`` (e.g. images
``[batch, C, H, W]``); for the Jacobian a sample's dimensions are flattened, so
``det`` is that of the ``[numel, numel]`` matrix ``d vec(f(x)) / d vec(x)``.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence

import torch
from nflows.transforms.base import Transform
from torch import Tensor


def randomise_parameters(transform: torch.nn.Module, scale: float = 0.5, seed: int = 7) -> None:
    """Move every parameter away from the near-identity initialisation."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in transform.parameters():
            noise = torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype)
            parameter.add_(scale * noise.to(parameter.device))


def jacobian_logdet(transform: Transform, inputs: Tensor, context: Tensor | None) -> Tensor:
    """Per-sample ``log|det df/dx|`` from the autograd Jacobian, one sample at a time.

    A sample of any shape is flattened: the Jacobian of shape ``[*shape, *shape]``
    is reshaped to the square ``[numel, numel]`` matrix (the same row-major order on
    both sides), whose determinant is the transform's volume change.
    """
    logdets = []
    for index in range(inputs.shape[0]):
        row_context = None if context is None else context[index : index + 1]

        def f(row: Tensor, row_context: Tensor | None = row_context) -> Tensor:
            return transform(row[None], context=row_context)[0][0]

        jacobian = torch.autograd.functional.jacobian(f, inputs[index])
        size = inputs[index].numel()
        assert jacobian.shape == (*inputs[index].shape, *inputs[index].shape)
        jacobian = jacobian.reshape(size, size)
        logdets.append(torch.linalg.slogdet(jacobian).logabsdet)
    return torch.stack(logdets)


def save_and_load(module: torch.nn.Module) -> torch.nn.Module:
    """``torch.save`` the whole module to memory and load it back (as users save flows)."""
    buffer = io.BytesIO()
    torch.save(module, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)  # a whole module is not weights only


def _sample_shape(size: int | Sequence[int]) -> tuple[int, ...]:
    return (size,) if isinstance(size, int) else tuple(size)


def check_transform(
    make: Callable[[], Transform],
    features: int | Sequence[int],
    context_features: int | Sequence[int] | None,
    *,
    batch: int = 6,
) -> None:
    """Run every harness check on the transform built by ``make`` (float32 and float64).

    ``features`` is the width of ``[batch, features]`` inputs or the shape of one
    sample (``(C, H, W)`` for images); ``context_features`` likewise for the
    context (``None``: no context).
    """
    shape = _sample_shape(features)
    context_shape = None if context_features is None else _sample_shape(context_features)
    for dtype in (torch.float32, torch.float64):
        torch.manual_seed(3)
        transform = make().to(dtype)
        randomise_parameters(transform)
        inputs = torch.randn(batch, *shape, dtype=dtype)
        context = None if context_shape is None else torch.randn(batch, *context_shape, dtype=dtype)
        outputs, logabsdet = transform(inputs, context=context)
        assert outputs.shape == inputs.shape and outputs.dtype == dtype
        assert logabsdet.shape == (batch,) and logabsdet.dtype == dtype
        assert torch.isfinite(outputs).all() and torch.isfinite(logabsdet).all()
        assert not torch.allclose(outputs, inputs), "randomised transform acts as the identity"

        tolerance = 1e-4 if dtype == torch.float32 else 1e-10
        restored, inverse_logabsdet = transform.inverse(outputs, context=context)
        torch.testing.assert_close(restored, inputs, atol=tolerance, rtol=tolerance)
        torch.testing.assert_close(
            logabsdet + inverse_logabsdet, torch.zeros_like(logabsdet), atol=tolerance, rtol=0
        )

        loaded = save_and_load(transform)  # after forward and inverse passes
        assert loaded is not transform
        for got, expected in (
            (loaded(inputs, context=context), (outputs, logabsdet)),
            (loaded.inverse(outputs, context=context), (restored, inverse_logabsdet)),
        ):
            torch.testing.assert_close(got, expected, atol=0, rtol=0)

        if dtype == torch.float64:
            expected = jacobian_logdet(transform, inputs, context)
            torch.testing.assert_close(logabsdet, expected, atol=1e-9, rtol=1e-9)

        if context is not None:
            other, _ = transform(inputs, context=context + 1.0)
            assert (other - outputs).abs().max() > 1e-3, "the context does not reach the output"
