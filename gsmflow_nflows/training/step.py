"""One GSMFlow training step: perturbation, NLL, prototype loss, backward, optimizer."""

from __future__ import annotations

import contextlib

import torch
from nflows.flows.base import Flow
from torch import Tensor

from gsmflow_nflows.losses import PrototypeLoss, VisualPerturbation, nll_per_dim

#: The numeric precisions of training and sampling: float32, or bfloat16 autocast.
PRECISIONS = ("fp32", "bf16")


def autocast_context(
    device: torch.device, precision: str
) -> contextlib.AbstractContextManager[None]:
    """``torch.autocast`` to bfloat16 for ``precision="bf16"``, a no-op for ``"fp32"``."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    raise ValueError(f"Unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}.")


def _at_least_fp32(tensor: Tensor) -> Tensor:
    """Upcast bf16/fp16 (autocast) results to float32; float32 and float64 stay as they are."""
    return tensor if tensor.dtype in (torch.float32, torch.float64) else tensor.float()


def train_step(
    flow: Flow,
    optimizer: torch.optim.Optimizer,
    features: Tensor,
    class_embeddings: Tensor,
    *,
    seen_embeddings: Tensor,
    seen_means: Tensor,
    perturbation: VisualPerturbation | None = None,
    prototype: PrototypeLoss | None = None,
    generator: torch.Generator | None = None,
    precision: str = "fp32",
) -> dict[str, Tensor]:
    """Run one optimisation step of GSMFlow on a batch and return its (detached) losses.

    ``loss = NLL per dimension of perturbed features + prototype loss``. Like the
    reference, each term gets its own backward before one optimizer step (the
    gradients are those of the sum).

    Args:
        flow: a flow from :func:`~gsmflow_nflows.build_gsmflow`.
        optimizer: over the flow's parameters (encoder included).
        features: ``[B, D]`` training features (real or mined).
        class_embeddings: ``[B, A]`` raw class vectors of the batch's labels.
        seen_embeddings: ``[S, A]`` raw class vectors of all seen classes.
        seen_means: ``[S, D]`` mean real training feature per seen class.
        perturbation: visual perturbation, or ``None`` for none.
        prototype: prototype loss, or ``None`` (or weight 0) for none.
        generator: random source of the perturbation.
        precision: ``"fp32"`` or ``"bf16"`` (autocast of the forward passes).

    Returns:
        ``{"nll", "prototype", "loss"}``, scalar tensors on the flow's device; no
        host synchronisation happens here.

    Example:
        >>> from gsmflow_nflows import build_gsmflow
        >>> classes = torch.rand(5, 3) + 0.1
        >>> flow = build_gsmflow(4, classes, num_blocks=1, hidden_features=8,
        ...                      semantic_features=4)
        >>> optimizer = torch.optim.Adam(flow.parameters())
        >>> labels = torch.tensor([0, 1, 1])
        >>> losses = train_step(flow, optimizer, torch.randn(3, 4), classes[labels],
        ...                     seen_embeddings=classes[:2], seen_means=torch.zeros(2, 4))
        >>> sorted(losses)
        ['loss', 'nll', 'prototype']
    """
    inputs = perturbation(features, generator=generator) if perturbation is not None else features
    optimizer.zero_grad(set_to_none=True)
    with autocast_context(features.device, precision):
        # The prototype loss first, on its own backward: its gradients become .grad,
        # and the NLL's are then added in place, instead of autograd summing two
        # weight-sized gradients into fresh buffers (~5% of a CPU step, same sums).
        if prototype is not None and prototype.weight > 0:
            prototype_loss = _at_least_fp32(prototype(flow, seen_embeddings, seen_means))
            prototype_loss.backward()
        else:
            prototype_loss = None
        context = flow._embedding_net(class_embeddings)
        noise, logabsdet = flow._transform(inputs, context=context)
        nll = nll_per_dim(_at_least_fp32(noise), _at_least_fp32(logabsdet))
    nll.backward()
    optimizer.step()
    nll = nll.detach()
    prototype_value = torch.zeros_like(nll) if prototype_loss is None else prototype_loss.detach()
    return {"nll": nll, "prototype": prototype_value, "loss": nll + prototype_value}
