"""Tiny generated xlsa17 datasets and configs for the training, protocol and CLI tests."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from gsmflow_nflows.data import GZSLData, load_dataset, make_synthetic_gzsl
from gsmflow_nflows.training import (
    EvaluationConfig,
    FlowTrainingConfig,
    GSMFlowConfig,
    MiningConfig,
    ModelConfig,
)

#: 6 classes (4 seen, 2 unseen), 16-d features, 40 training images.
TINY_SIZES = {
    "num_classes": 6,
    "num_seen": 4,
    "attribute_dim": 5,
    "feature_dim": 16,
    "train_per_class": 10,
    "test_seen_per_class": 5,
    "test_unseen_per_class": 6,
    "num_val_classes": 1,
    "image_files": False,
}


def make_tiny(root: Path, name: str = "TINY", seed: int = 1, **overrides) -> Path:
    """Write a tiny xlsa17 dataset folder ``root/name``; returns ``root``."""
    make_synthetic_gzsl(Path(root) / name, seed=seed, **{**TINY_SIZES, **overrides})
    return Path(root)


def load_tiny(root: Path, name: str = "TINY", split: str = "test") -> GZSLData:
    return load_dataset(name, data_root=root, split=split)


def tiny_config(seed: int = 0, **sections) -> GSMFlowConfig:
    """A config small enough for a fit of well under a second on the tiny dataset.

    ``sections`` override fields: ``tiny_config(training={"lr": 1e-2})``.
    """
    config = GSMFlowConfig(
        model=ModelConfig(num_blocks=2, hidden_features=16, semantic_features=8),
        training=FlowTrainingConfig(
            epochs=5,  # 40 // 10 * 5 = 20 iterations
            batch_size=10,
            lr=1e-3,
            weight_decay=1e-5,
            lr_step_epochs=2,
            lr_gamma=0.5,
            prototype_weight=3.0,
            perturbation_pi=0.02,
        ),
        mining=MiningConfig(
            relation_epochs=1,
            relation_batch_size=10,
            relation_hidden=16,
            loops=2,
        ),
        evaluation=EvaluationConfig(
            samples_per_class=20,
            classifier_batch_size=64,
            classifier_epochs=3,
            classifier_min_steps=0,
            eval_every=5,
            eval_start=5,
        ),
        seed=seed,
    )
    for name, values in sections.items():
        section = dataclasses.replace(getattr(config, name), **values)
        config = dataclasses.replace(config, **{name: section})
    return config
