"""The authors' GSMFlow model, written with FrEIA, as the speed baseline.

This is the paper's model (Chen et al., IEEE TMM 2022) the way the
authors' research code builds it: FrEIA ``GLOWCouplingBlock`` s in a
``SequenceINN``, each conditioned on the relative-positioning embedding ``h`` by
concatenation, no permutation between blocks, every flow parameter initialised
to ``0.01 * N(0, 1)``. It exists only for ``benchmarks/speed.py`` and the
identical-weights test; FrEIA is a ``bench`` extra, never a runtime dependency
of ``gsmflow_nflows``.

Soft clamp: the authors' FrEIA version computed ``exp(clamp * 0.636 *
atan(s / clamp))``; FrEIA 0.2 computes ``clamp * f(s)`` with ``f(s) = 0.636 *
atan(s)``. We pass ``f(s) = 0.636 * atan(s / clamp)`` so that the scale is the
paper's for any clamp (the two agree at the published clamp = 1.0).

References:
    Chen et al., "GSMFlow: Generation Shifts Mitigating Flow for Generalized
    Zero-Shot Learning", IEEE Transactions on Multimedia, 2022.
"""

from __future__ import annotations

import functools

import torch
from FrEIA.framework import SequenceINN
from FrEIA.modules import GLOWCouplingBlock
from nflows.transforms.base import CompositeTransform, Transform
from torch import Tensor, nn

__all__ = [
    "ReferenceGSMFlow",
    "ReferenceRelativePositioning",
    "choose_anchor_indices",
    "map_weights",
    "reference_generate",
    "reference_nll",
    "reference_train_step",
]


def choose_anchor_indices(class_embeddings: Tensor) -> list[int]:
    """Anchor classes of the relative-positioning module.

    Row sums of the pairwise cosine-similarity matrix of all class embeddings:
    the class with the smallest sum, the one with the largest, and the one at
    index ``floor(C / 2)`` of the ascending sorted sums.

    Args:
        class_embeddings: ``[C, A]`` semantic vectors of all classes.

    Returns:
        ``[argmin, argmax, median-position]`` class indices.
    """
    unit = nn.functional.normalize(class_embeddings, dim=1)
    sums = (unit @ unit.T).sum(dim=1)
    order = torch.argsort(sums)
    return [int(order[0]), int(order[-1]), int(order[sums.numel() // 2])]


class ReferenceRelativePositioning(nn.Module):
    """``h(a) = sum_k ReLU(W_k (a - v_k) + b_k)`` over three anchor classes."""

    def __init__(self, class_embeddings: Tensor, semantic_features: int = 1024) -> None:
        super().__init__()
        anchors = class_embeddings[choose_anchor_indices(class_embeddings)].clone()
        self.register_buffer("anchors", anchors)
        self.layers = nn.ModuleList(
            nn.Linear(class_embeddings.shape[1], semantic_features) for _ in range(3)
        )

    def forward(self, class_embeddings: Tensor) -> Tensor:
        out = 0
        for anchor, layer in zip(self.anchors, self.layers, strict=True):
            out = out + torch.relu(layer(class_embeddings - anchor))
        return out


def _soft_clamp(u: Tensor, clamp: float) -> Tensor:
    return 0.636 * torch.atan(u / clamp)


def _subnet(in_features: int, out_features: int, hidden_features: int) -> nn.Module:
    return nn.Sequential(
        nn.Linear(in_features, hidden_features),
        nn.LeakyReLU(0.2),
        nn.Linear(hidden_features, out_features),
    )


class ReferenceGSMFlow(nn.Module):
    """FrEIA GSMFlow: relative-positioning encoder + K conditional GLOW blocks.

    ``forward(x, class_embeddings)`` goes data -> noise and returns
    ``(z, log|det J|)``; ``inverse(z, class_embeddings)`` goes noise -> data.
    ``inn[k].subnet2`` computes ``(s2, t2)`` from ``[x2, h]`` and transforms the
    first half, ``inn[k].subnet1`` computes ``(s1, t1)`` from ``[y1, h]`` and
    transforms the second half; each subnet's output is ``[s, t]``.
    """

    def __init__(
        self,
        features: int,
        class_embeddings: Tensor,
        *,
        num_blocks: int = 5,
        hidden_features: int = 2048,
        semantic_features: int = 1024,
        clamp: float = 1.0,
    ) -> None:
        super().__init__()
        self.features = features
        self.encoder = ReferenceRelativePositioning(class_embeddings, semantic_features)
        self.inn = SequenceINN(features)
        for _ in range(num_blocks):
            self.inn.append(
                GLOWCouplingBlock,
                cond=0,
                cond_shape=(semantic_features,),
                subnet_constructor=functools.partial(_subnet, hidden_features=hidden_features),
                clamp=clamp,
                clamp_activation=functools.partial(_soft_clamp, clamp=clamp),
            )
        with torch.no_grad():
            for p in self.inn.parameters():
                p.copy_(0.01 * torch.randn_like(p))

    def forward(self, inputs: Tensor, class_embeddings: Tensor) -> tuple[Tensor, Tensor]:
        return self.forward_with_context(inputs, self.encoder(class_embeddings))

    def forward_with_context(self, inputs: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        return self.inn(inputs, c=[context])

    def inverse_with_context(self, noise: Tensor, context: Tensor) -> Tensor:
        x, _ = self.inn(noise, c=[context], rev=True)
        return x


def _coupling_transforms(flow: nn.Module) -> list[nn.Module]:
    return [m for m in flow._transform.modules() if hasattr(m, "transform_net")]


def map_weights(flow: nn.Module, reference: ReferenceGSMFlow) -> list[str]:
    """Copy our flow's weights into the FrEIA reference, where the structures correspond.

    Block ``k`` of the reference is our couplings ``2k`` (transforms the first
    half from ``[x2, h]``: FrEIA's ``subnet2``) and ``2k + 1`` (transforms the
    second half from ``[y1, h]``: ``subnet1``). Our coupling net's first layer is
    stored as ``input_layer`` + ``context_layer`` (``W [x; h] + b = W_x x + W_h h
    + b``), FrEIA's as one ``Linear`` on the concatenation: we concatenate the
    two weight blocks. Output ``[s, t]`` order is the same in both. The encoder's
    three anchor layers map one to one; the anchors must agree.

    Returns:
        Notes on what could not be mapped (empty when everything was).

    Raises:
        ValueError: the structures do not correspond (e.g. a permutation between
            blocks, which the reference does not have).
    """
    notes: list[str] = []
    couplings = _coupling_transforms(flow)
    blocks = list(reference.inn)
    if len(couplings) != 2 * len(blocks):
        raise ValueError(
            f"Expected {2 * len(blocks)} couplings for {len(blocks)} GLOW blocks, "
            f"got {len(couplings)}."
        )
    leaves = [
        type(m).__name__
        for m in flow._transform.modules()
        if isinstance(m, Transform) and not isinstance(m, CompositeTransform)
    ]
    others = sorted({name for name in leaves if name != type(couplings[0]).__name__})
    if others:
        raise ValueError(f"Our flow has transforms the reference lacks: {others}.")
    half = reference.features // 2
    first_half = torch.arange(reference.features) < half
    with torch.no_grad():
        for k, block in enumerate(blocks):
            for coupling, subnet, transforms_first in (
                (couplings[2 * k], block.subnet2, True),
                (couplings[2 * k + 1], block.subnet1, False),
            ):
                transformed = torch.zeros(reference.features, dtype=torch.bool)
                transformed[coupling.transform_features.cpu()] = True
                expected = first_half if transforms_first else ~first_half
                if not torch.equal(transformed, expected):
                    raise ValueError(
                        f"Coupling {2 * k + (not transforms_first)} transforms other features "
                        "than the reference's GLOW half; no permutation is supported."
                    )
                net = coupling.transform_net
                subnet[0].weight.copy_(net.first_layer_weight())
                subnet[0].bias.copy_(net.input_layer.bias)
                subnet[2].weight.copy_(net.output_layer.weight)
                subnet[2].bias.copy_(net.output_layer.bias)
        encoder = flow._embedding_net
        if not torch.equal(encoder.anchors, reference.encoder.anchors):
            notes.append("anchors differ between our encoder and the reference; copied ours")
            reference.encoder.anchors.copy_(encoder.anchors)
        for ours, theirs in zip(encoder.anchor_layers, reference.encoder.layers, strict=True):
            theirs.weight.copy_(ours.weight)
            theirs.bias.copy_(ours.bias)
    return notes


def reference_nll(z: Tensor, logabsdet: Tensor) -> Tensor:
    """The reference NLL per dimension: ``mean(z**2)/2 - mean(logdet)/D``."""
    return torch.mean(z**2) / 2 - torch.mean(logabsdet) / z.shape[1]


def reference_train_step(
    model: ReferenceGSMFlow,
    optimizer: torch.optim.Optimizer,
    features: Tensor,
    class_embeddings: Tensor,
    seen_class_embeddings: Tensor,
    seen_class_means: Tensor,
    *,
    perturbation: float = 0.02,
    prototype_weight: float = 3.0,
    noise: Tensor | None = None,
) -> dict[str, Tensor]:
    """One reference training step, as the authors' loop does it.

    Perturbation ``x + pi * eps``; NLL; prototype loss (invert at ``z = 0`` for
    every seen class, ``h`` under ``no_grad`` so only the flow gets this
    gradient; ``weight * MSE`` to the class means); backward; optimizer step.

    Args:
        model: the reference flow.
        optimizer: optimizer over ``model.parameters()`` (Adam in the paper).
        features: ``[B, D]`` training batch.
        class_embeddings: ``[B, A]`` semantic vector of each sample's class.
        seen_class_embeddings: ``[S, A]`` semantic vectors of all seen classes.
        seen_class_means: ``[S, D]`` mean real feature of each seen class.
        perturbation: ``pi``, the noise scale.
        prototype_weight: ``lambda_p``.
        noise: optional ``eps`` (same shape as ``features``), for identical
            inputs across models; drawn from the global RNG when ``None``.

    Returns:
        The losses, detached scalar tensors (no host synchronisation).
    """
    if noise is None:
        noise = torch.randn_like(features)
    optimizer.zero_grad(set_to_none=True)
    z, logabsdet = model(features + perturbation * noise, class_embeddings)
    nll = reference_nll(z, logabsdet)
    with torch.no_grad():
        seen_context = model.encoder(seen_class_embeddings)
    prototypes = model.inverse_with_context(
        torch.zeros_like(seen_class_means), seen_context.detach()
    )
    prototype = nn.functional.mse_loss(prototypes, seen_class_means)
    loss = nll + prototype_weight * prototype
    loss.backward()
    optimizer.step()
    return {"loss": loss.detach(), "nll": nll.detach(), "prototype": prototype.detach()}


@torch.no_grad()
def reference_generate(
    model: ReferenceGSMFlow,
    class_embeddings: Tensor,
    num_per_class: int,
    *,
    batch_size: int | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Sample features: ``z ~ N(0, I)``, inverse flow with ``h(a_c)``, batched.

    Returns:
        ``(features [C * n, D], labels [C * n])``, classes in order.
    """
    num_classes = class_embeddings.shape[0]
    context_per_class = model.encoder(class_embeddings)
    labels = torch.arange(num_classes, device=class_embeddings.device).repeat_interleave(
        num_per_class
    )
    batch_size = batch_size or labels.numel()
    out = []
    for start in range(0, labels.numel(), batch_size):
        batch_labels = labels[start : start + batch_size]
        z = torch.randn(
            batch_labels.numel(),
            model.features,
            generator=generator,
            device=class_embeddings.device,
            dtype=context_per_class.dtype,
        )
        out.append(model.inverse_with_context(z, context_per_class[batch_labels]))
    return torch.cat(out), labels
