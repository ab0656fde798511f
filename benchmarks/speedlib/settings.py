"""The sizes and hyperparameters of a speed run: aPY's from the package, ``--quick``, overrides."""

from __future__ import annotations

import argparse
from typing import Any

from gsmflow_nflows.data import KNOWN_DATASETS
from gsmflow_nflows.training import PAPER_PRESETS

#: Width of the xlsa17 ResNet-101 features (the dataset registry records no feature width).
RESNET101_FEATURES = 2048


def apy_settings() -> dict[str, Any]:
    """aPY's sizes (``KNOWN_DATASETS["apy"]``) and published hyperparameters (``PAPER_PRESETS``).

    The hyperparameters are those of ``preset_config("apy", data, "paper")``,
    the paper's table as the package keeps it, so the benchmark times the step
    a paper run trains with.
    """
    info, paper = KNOWN_DATASETS["apy"], PAPER_PRESETS["apy"]
    return {
        "classes": info.num_classes,
        "seen": info.num_seen,
        "attributes": info.attribute_dim,
        "features": RESNET101_FEATURES,
        "train_size": info.num_trainval,
        "batch": paper.training.batch_size,
        "blocks": paper.model.num_blocks,
        "hidden": paper.model.hidden_features,
        "semantic": paper.model.semantic_features,
        "clamp": float(paper.model.clamp),
        "samples_per_class": paper.evaluation.samples_per_class,
        "lr": float(paper.training.lr),
        "weight_decay": float(paper.training.weight_decay),
        "perturbation": float(paper.training.perturbation_pi),
        "prototype_weight": float(paper.training.prototype_weight),
    }


#: The seed of aPY's paper preset: the default of ``--seed``.
APY_SEED: int = PAPER_PRESETS["apy"].seed

#: A tiny size for smoke runs (``--quick``); the hyperparameters stay aPY's.
QUICK: dict[str, int] = {
    "classes": 8,
    "seen": 5,
    "attributes": 6,
    "features": 16,
    "train_size": 64,
    "batch": 16,
    "blocks": 2,
    "hidden": 32,
    "semantic": 8,
    "samples_per_class": 64,
}

#: Settings that a command-line flag of the same name (``_`` as ``-``) overrides.
SIZE_FLAGS = tuple(QUICK)


def resolve_settings(args: argparse.Namespace) -> dict[str, Any]:
    """aPY's settings, with ``--quick``'s sizes if asked, then every size flag that was given."""
    settings = apy_settings()
    if args.quick:
        settings.update(QUICK)
    for key in SIZE_FLAGS:
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    return settings
