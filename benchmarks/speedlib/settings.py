"""The sizes and hyperparameters of a speed run: aPY's, the ``--quick`` smoke size, overrides."""

from __future__ import annotations

import argparse
from typing import Any

#: aPY, as published (docs/gsmflow-spec.md).
APY: dict[str, Any] = {
    "classes": 32,
    "seen": 20,
    "attributes": 64,
    "features": 2048,
    "train_size": 5932,
    "batch": 200,
    "blocks": 5,
    "hidden": 2048,
    "semantic": 1024,
    "samples_per_class": 9000,
    "lr": 3e-4,
    "weight_decay": 1e-5,
    "perturbation": 0.02,
    "prototype_weight": 3.0,
}

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
    settings = dict(APY)
    if args.quick:
        settings.update(QUICK)
    for key in SIZE_FLAGS:
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    return settings
