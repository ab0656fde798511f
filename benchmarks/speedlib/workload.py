"""The workload every variant of the speed benchmark runs, and the agreement check.

Synthetic aPY-shaped data (the real files are not needed to time a step); our
flow and the FrEIA reference built from the same settings, with our weights
copied into the reference; the training batches; and the check that the two
models then compute the same NLL, ``z`` and log-det.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from nflows.flows.base import Flow
from torch import Tensor, nn

from benchmarks.freia_reference import (
    ReferenceGSMFlow,
    choose_anchor_indices,
    map_weights,
    reference_nll,
)
from gsmflow_nflows import build_gsmflow


@dataclasses.dataclass
class SyntheticData:
    """aPY-shaped synthetic GZSL data.

    Attributes:
        class_embeddings: ``[C, A]`` L2-normalised class vectors, all classes.
        seen: ``[S]`` indices of the seen classes; ``unseen``: ``[U]``.
        features: ``[N, D]`` training features of seen classes, in ``[0, 1]``
            like the reference's MinMax-scaled ResNet features.
        labels: ``[N]`` class index (into all classes) of each feature.
        seen_class_means: ``[S, D]`` mean training feature per seen class.
    """

    class_embeddings: Tensor
    seen: Tensor
    unseen: Tensor
    features: Tensor
    labels: Tensor
    seen_class_means: Tensor


def make_data(
    settings: dict[str, Any], generator: torch.Generator, device: torch.device
) -> SyntheticData:
    """Random class vectors; features scattered (noise 0.1) around a prototype per seen class."""
    num_classes, num_seen = settings["classes"], settings["seen"]
    embeddings = torch.rand(num_classes, settings["attributes"], generator=generator)
    embeddings = nn.functional.normalize(embeddings, dim=1)
    order = torch.randperm(num_classes, generator=generator)
    seen, unseen = order[:num_seen].sort().values, order[num_seen:].sort().values
    prototypes = torch.rand(num_seen, settings["features"], generator=generator)
    which = torch.randint(num_seen, (settings["train_size"],), generator=generator)
    noise = 0.1 * torch.randn(settings["train_size"], settings["features"], generator=generator)
    features = (prototypes[which] + noise).clamp(0, 1)
    means = torch.stack([features[which == k].mean(0) for k in range(num_seen)])
    return SyntheticData(
        class_embeddings=embeddings.to(device),
        seen=seen.to(device),
        unseen=unseen.to(device),
        features=features.to(device),
        labels=seen[which].to(device),
        seen_class_means=means.to(device),
    )


@dataclasses.dataclass
class Workload:
    """What every variant starts from; each runner trains its own copy of a model.

    Attributes:
        settings: the run's sizes and hyperparameters.
        data: the synthetic data, on ``device``.
        flow: our initial flow.
        reference: the initial FrEIA reference, holding ``flow``'s weights.
        mapping_notes: what ``map_weights`` had to say (empty when all mapped cleanly).
        reference_anchor_indices: the reference's choice of anchor classes.
        batches: index tensors of the training batches; step ``i`` uses ``i % len``.
        device: where everything runs.
    """

    settings: dict[str, Any]
    data: SyntheticData
    flow: Flow
    reference: ReferenceGSMFlow
    mapping_notes: list[str]
    reference_anchor_indices: list[int]
    batches: list[Tensor]
    device: torch.device


def build_workload(
    settings: dict[str, Any], num_batches: int, seed: int, device: torch.device
) -> Workload:
    """Data and batches from a generator seeded with ``seed``, model inits from the global RNG."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    data = make_data(settings, generator, device)
    shape = {
        "num_blocks": settings["blocks"],
        "hidden_features": settings["hidden"],
        "semantic_features": settings["semantic"],
        "clamp": settings["clamp"],
    }
    flow = build_gsmflow(settings["features"], data.class_embeddings, **shape).to(device)
    cpu_embeddings = data.class_embeddings.cpu()
    reference = ReferenceGSMFlow(settings["features"], cpu_embeddings, **shape).to(device)
    anchors = choose_anchor_indices(cpu_embeddings)
    notes = map_weights(flow, reference)
    batches = [
        torch.randperm(settings["train_size"], generator=generator)[: settings["batch"]].to(device)
        for _ in range(num_batches)
    ]
    return Workload(settings, data, flow, reference, notes, anchors, batches, device)


def check_agreement(workload: Workload) -> dict[str, Any]:
    """NLL, z and log-det of both models on the first batch (fp32, no perturbation).

    ``ok`` at fp32 tolerances: NLL relative 1e-5; z (order 1) 1e-4; log-det (a
    sum over D terms) 1e-6 * D. The float64 proof at 1e-5 is in tests/benchmarks/.
    """
    data, batch, flow = workload.data, workload.batches[0], workload.flow
    x, a = data.features[batch], data.class_embeddings[data.labels[batch]]
    with torch.no_grad():
        z_ours, logdet_ours = flow._transform(x, context=flow._embedding_net(a))
        z_ref, logdet_ref = workload.reference(x, a)
        nll_ours, nll_ref = reference_nll(z_ours, logdet_ours), reference_nll(z_ref, logdet_ref)
    result: dict[str, Any] = {
        "nll_ours": nll_ours.item(),
        "nll_reference": nll_ref.item(),
        "nll_abs_diff": (nll_ours - nll_ref).abs().item(),
        "z_max_abs_diff": (z_ours - z_ref).abs().max().item(),
        "logdet_max_abs_diff": (logdet_ours - logdet_ref).abs().max().item(),
        "logdet_max_abs": logdet_ref.abs().max().item(),
    }
    result["ok"] = (
        result["nll_abs_diff"] <= 1e-5 * max(1.0, abs(result["nll_reference"]))
        and result["z_max_abs_diff"] <= 1e-4
        and result["logdet_max_abs_diff"] <= 1e-6 * x.shape[1]
    )
    return result
