"""The variants of the speed benchmark and what each runs: model, optimizer, step, sampler.

A :class:`Variant` names a configuration (the FrEIA reference or ours; fp32
or bf16; eager or ``torch.compile``; fused or plain Adam); :func:`make_runner`
turns it into a :class:`Runner` with its own copy of the initial weights and a
fresh optimizer.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

from benchmarks.freia_reference import reference_generate, reference_train_step
from benchmarks.speedlib.workload import Workload
from gsmflow_nflows import generate_features
from gsmflow_nflows.losses import PrototypeLoss, VisualPerturbation
from gsmflow_nflows.training.step import autocast_context, train_step


@dataclasses.dataclass
class Variant:
    """One configuration to measure.

    Attributes:
        name: its row in the table.
        kind: ``"reference"`` (FrEIA) or ``"ours"``.
        precision: ``"fp32"`` or ``"bf16"`` (ours only: autocast of step and sampling).
        compile: ``torch.compile`` the flow's transform (ours only).
        fused_adam: ``Adam(fused=True)``, as our trainer builds it; else the
            authors' plain ``torch.optim.Adam`` (torch's default implementation).
    """

    name: str
    kind: str
    precision: str = "fp32"
    compile: bool = False
    fused_adam: bool = True


def build_variants(precisions: Iterable[str], plain_adam: bool, compile: bool) -> list[Variant]:
    """The reference twice, then ours at each precision; ``--plain-adam`` and ``--compile`` after.

    The reference runs with the authors' plain Adam (the baseline of every
    ratio) and with the fused Adam our trainer uses, so that our step's own
    gain (ours against the fused reference) shows apart from the optimizer's.
    The compiled variants come last: a failed compile can leave the dispatcher
    in a bad state for whatever runs after it.
    """
    precisions = list(precisions)
    variants = [
        Variant("reference (FrEIA)", "reference", fused_adam=False),
        Variant("reference (FrEIA, fused Adam)", "reference", fused_adam=True),
    ]
    variants += [Variant(f"ours-{p}", "ours", p) for p in precisions]
    if plain_adam:
        variants += [
            Variant(f"ours-{p}-plain-adam", "ours", p, fused_adam=False) for p in precisions
        ]
    if compile:
        variants += [Variant(f"ours-{p}-compile", "ours", p, compile=True) for p in precisions]
    return variants


@dataclasses.dataclass
class Runner:
    """One variant, ready to run: ``step(i)`` trains on batch ``i``, ``sample(a, n)`` generates.

    The lists and ``result`` are filled in while the variant is measured.
    """

    variant: Variant
    model: nn.Module
    optimizer: torch.optim.Optimizer
    step: Callable[[int], Any]
    sample: Callable[[Tensor, int], Any]
    step_times: list[float] = dataclasses.field(default_factory=list)
    sample_times: list[float] = dataclasses.field(default_factory=list)
    sample_count: int = 0
    result: dict[str, Any] = dataclasses.field(default_factory=dict)


def make_adam(model: nn.Module, settings: dict[str, Any], fused: bool) -> torch.optim.Optimizer:
    """``Adam(fused=True)`` as our trainer builds it, or, when not ``fused``, the authors' Adam."""
    adam = {"lr": settings["lr"], "weight_decay": settings["weight_decay"]}
    if fused:
        return torch.optim.Adam(model.parameters(), fused=True, **adam)
    return torch.optim.Adam(model.parameters(), **adam)


def make_runner(variant: Variant, workload: Workload, sample_batch: int) -> Runner:
    """A fresh copy of the initial weights, a fresh Adam, and the variant's step and sampler.

    Precision: our step applies it itself (``train_step(..., precision=...)``);
    sampling runs under ``no_grad`` and the variant's autocast.
    """
    if variant.kind == "reference":
        model: nn.Module = copy.deepcopy(workload.reference)
        optimizer = make_adam(model, workload.settings, fused=variant.fused_adam)
        batch_step, raw_sample = _reference_functions(model, optimizer, workload, sample_batch)
    else:
        model = copy.deepcopy(workload.flow)
        optimizer = make_adam(model, workload.settings, fused=variant.fused_adam)
        batch_step, raw_sample = _our_functions(
            model, optimizer, workload, sample_batch, variant.precision
        )
    if variant.compile:  # the flow's model code; the step's glue (loss, Adam) stays eager
        transform = model._transform
        transform.forward = torch.compile(transform.forward)
        transform.inverse = torch.compile(transform.inverse)
    batches = workload.batches

    def step(i: int) -> Any:
        return batch_step(batches[i % len(batches)])

    def sample(classes: Tensor, n: int) -> Any:
        with torch.no_grad(), autocast_context(workload.device, variant.precision):
            return raw_sample(classes, n)

    return Runner(variant, model, optimizer, step, sample)


StepAndSampler = tuple[Callable[[Tensor], Any], Callable[[Tensor, int], Any]]


def _reference_functions(
    model: nn.Module, optimizer: torch.optim.Optimizer, workload: Workload, sample_batch: int
) -> StepAndSampler:
    """The authors' training step on a batch, and the batched reference sampler."""
    data, settings = workload.data, workload.settings
    seen_embeddings = data.class_embeddings[data.seen]

    def batch_step(batch: Tensor) -> Any:
        return reference_train_step(
            model,
            optimizer,
            data.features[batch],
            data.class_embeddings[data.labels[batch]],
            seen_embeddings,
            data.seen_class_means,
            perturbation=settings["perturbation"],
            prototype_weight=settings["prototype_weight"],
        )

    def sample(classes: Tensor, n: int) -> Any:
        return reference_generate(model, classes, n, batch_size=sample_batch)

    return batch_step, sample


def _our_functions(
    flow: nn.Module,
    optimizer: torch.optim.Optimizer,
    workload: Workload,
    sample_batch: int,
    precision: str,
) -> StepAndSampler:
    """The package's ``train_step`` on a batch, and ``generate_features``."""
    data, settings = workload.data, workload.settings
    seen_embeddings = data.class_embeddings[data.seen]
    perturbation = VisualPerturbation(settings["perturbation"])
    prototype = PrototypeLoss(settings["prototype_weight"])

    def batch_step(batch: Tensor) -> Any:
        return train_step(
            flow,
            optimizer,
            data.features[batch],
            data.class_embeddings[data.labels[batch]],
            seen_embeddings=seen_embeddings,
            seen_means=data.seen_class_means,
            perturbation=perturbation,
            prototype=prototype,
            precision=precision,
        )

    def sample(classes: Tensor, n: int) -> Any:
        return generate_features(flow, classes, n, batch_size=sample_batch)

    return batch_step, sample
