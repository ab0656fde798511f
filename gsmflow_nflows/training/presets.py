"""Presets: the paper's published hyperparameters, and defaults derived from the data.

* ``paper``: the hyperparameters published with the paper (Chen et al., "GSMFlow:
  Generation Shifts Mitigating Flow for Generalized Zero-Shot Learning", IEEE
  TMM 2022) for aPY, AWA2, CUB and FLO. AWA1
  takes AWA2's (same classes and attributes), SUN takes CUB's with 200
  generated features per unseen class, ``synthetic`` takes aPY's (it is
  aPY-shaped). Use it to reproduce the paper (hours on a CPU).
* ``default`` and ``quick``: :func:`generic_config`, every value derived from
  the dataset's sizes (``N``, ``D``, ``S``) by a stated rule; ``quick`` is a
  smaller model trained to convergence on a shorter run, not a truncated
  paper schedule.
* ``smoke``: seconds, for tests; its numbers mean nothing.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from gsmflow_nflows.data import GZSLData
from gsmflow_nflows.errors import ConfigError
from gsmflow_nflows.training.config import (
    EvaluationConfig,
    FlowTrainingConfig,
    GSMFlowConfig,
    MiningConfig,
    ModelConfig,
)

PRESET_KINDS = ("default", "quick", "paper", "smoke")


#: The hyperparameters published with the paper for its GZSL runs, dataset by dataset.
PAPER_PRESETS: dict[str, GSMFlowConfig] = {
    "apy": GSMFlowConfig(
        model=ModelConfig(num_blocks=5),
        training=FlowTrainingConfig(
            epochs=600,
            batch_size=200,
            lr=3e-4,
            weight_decay=1e-5,
            lr_step_epochs=20,
            lr_gamma=0.55,
            prototype_weight=3,
            perturbation_pi=0.02,
        ),
        mining=MiningConfig(
            relation_epochs=50,
            relation_batch_size=200,
            relation_lr=1e-3,
            relation_weight_decay=3e-6,
            lr=30,
            loops=20,
            entropy_weight=10,
        ),
        evaluation=EvaluationConfig(
            samples_per_class=9000,
            classifier_lr=1e-3,
            classifier_batch_size=1200,
            classifier_epochs=20,
            eval_every=300,
            eval_start=5000,
        ),
        seed=6152,
    ),
    "awa2": GSMFlowConfig(
        model=ModelConfig(num_blocks=3),
        training=FlowTrainingConfig(
            epochs=1000,
            batch_size=256,
            lr=3e-4,
            weight_decay=3e-6,
            lr_step_epochs=17,
            lr_gamma=0.92,
            prototype_weight=10,
            perturbation_pi=0.15,
        ),
        mining=MiningConfig(
            relation_epochs=50,
            relation_batch_size=256,
            relation_lr=3e-4,
            relation_weight_decay=3e-6,
            lr=100,
            loops=30,
            entropy_weight=20,
        ),
        evaluation=EvaluationConfig(
            samples_per_class=50000,
            classifier_lr=0.005,
            classifier_batch_size=1200,
            classifier_epochs=30,
            eval_every=500,
            eval_start=60000,
        ),
        seed=7848,
    ),
    "cub": GSMFlowConfig(
        model=ModelConfig(num_blocks=3),
        training=FlowTrainingConfig(
            epochs=1500,
            batch_size=256,
            lr=1e-4,
            weight_decay=3e-5,
            lr_step_epochs=25,
            lr_gamma=0.8,
            prototype_weight=1,
            perturbation_pi=0.05,
        ),
        mining=MiningConfig(
            relation_epochs=100,
            relation_batch_size=256,
            relation_lr=1e-4,
            relation_weight_decay=1e-6,
            lr=20,
            loops=20,
            entropy_weight=10,
        ),
        evaluation=EvaluationConfig(
            samples_per_class=600,
            classifier_lr=0.003,
            classifier_batch_size=600,
            classifier_epochs=50,
            eval_every=300,
            eval_start=10000,
        ),
        seed=6167,
    ),
    "flo": GSMFlowConfig(
        model=ModelConfig(num_blocks=3),
        training=FlowTrainingConfig(
            epochs=1000,
            batch_size=256,
            lr=1e-4,
            weight_decay=1e-4,
            lr_step_epochs=30,
            lr_gamma=0.8,
            prototype_weight=3,
            perturbation_pi=0.1,
        ),
        mining=MiningConfig(
            relation_epochs=60,
            relation_batch_size=64,
            relation_lr=3e-4,
            relation_weight_decay=1e-6,
            lr=20,
            loops=20,
            entropy_weight=1,
        ),
        evaluation=EvaluationConfig(
            samples_per_class=3000,
            classifier_lr=0.005,
            classifier_batch_size=1000,
            classifier_epochs=30,
            eval_every=300,
            eval_start=2000,
        ),
        seed=6289,
    ),
}
PAPER_PRESETS["awa1"] = PAPER_PRESETS["awa2"]
# SUN: CUB's fine-grained settings; 645 seen classes with ~16 images each, so
# 200 generated features per unseen class keeps generated and real counts close.
PAPER_PRESETS["sun"] = dataclasses.replace(
    PAPER_PRESETS["cub"],
    evaluation=dataclasses.replace(PAPER_PRESETS["cub"].evaluation, samples_per_class=200),
)
# Synthetic (aPY-shaped, 100 real images per seen class): aPY's settings with a
# generated count per unseen class in proportion to the real seen count.
PAPER_PRESETS["synthetic"] = dataclasses.replace(
    PAPER_PRESETS["apy"],
    evaluation=dataclasses.replace(PAPER_PRESETS["apy"].evaluation, samples_per_class=300),
    seed=0,
)


#: Flow iterations of the data-derived presets: (minimum, maximum), and the epochs aimed at.
_DEFAULT_ITERATIONS = {"default": (1000, 3000), "quick": (500, 1000)}
_DEFAULT_EPOCHS = 20


def generic_config(data: GZSLData, size: str = "default") -> GSMFlowConfig:
    """A config derived from the dataset's sizes: the ``default`` and ``quick`` presets.

    Every rule comes from ``N`` (training features), ``D`` (feature dimension),
    ``S`` (seen classes) and ``A`` (class-vector width), not from a tuned
    constant; the README lists them with their reasons.

    * model: 3 blocks; hidden width ``2 * D`` between 64 and 512 (``quick``:
      half, at least 32; 512 bounds the cost of a step at 2048-d features);
      ``conditioning="mean"`` (not in the paper: the class vector enters
      through a ridge regression of the seen class means, see
      :mod:`gsmflow_nflows.semantic_mean`; chosen on validation splits, where
      the paper's coupling conditioning overfit the few seen vectors).
    * schedule: batch ``N // 8`` between 32 and 128 (at least 8 batches an
      epoch; 128 keeps an aPY-sized step near half a second on 2 CPU cores);
      iterations: 20 epochs, between 1,000 and 3,000 (``quick``: 500 and
      1,000), so a small set still trains to convergence and a large one
      stays within minutes; learning rate 3e-4 halved at each third of the run
      (not a decay that reaches zero half-way).
    * mining: off. With ``conditioning="mean"`` the boundary samples widened
      the residual distribution and cost unseen accuracy on the digits'
      validation split (H 51.7 with mining, 72.0 without; one seed). When
      switched on, the relation net is as wide as the coupling nets and trains
      at least 500 steps (at most 50 epochs), with the paper's 20 loops.
    * generated features per unseen class: twice the mean real count per seen
      class, between 50 and 5,000 (far more generated than real features drove
      seen accuracy to zero on small datasets).
    * oversampling of the generated features: ``ceil(50 * D / samples)`` draws
      per generated sample, each weighing ``1 / oversample`` in the classifier
      (the unseen classes keep their weight), at most what keeps the generated
      set within 512 MiB of fp32 features. A linear classifier fitted on ``n``
      draws in ``D`` dimensions moves with the draw by about ``sqrt(D / n)``;
      on the real digits (``D = 64``) one draw of 290 per class moved H by a
      standard deviation of 4.7 points, 10 draws per sample (45 ``D``) by 1.3.
    * classifier: lr 1e-2 decayed to 0 along a half cosine (the last iterate is
      the regularised optimum, the same for every classifier seed, where a
      constant lr left seeds up to 10 points of H apart on the aPY-sized set),
      with the floor of 1,000 Adam steps, batch up to
      1,200: Adam moves a weight by about ``lr`` a step, so 1,000 steps let the
      weights of a converged softmax on ``[0, 1]`` features (of order 10) be
      reached; at lr 1e-3 they were not, on the digits. Weight decay ``1 / n``
      for its ``n`` training features: the L2 penalty of scikit-learn's
      ``LogisticRegression`` (``C = 1``) on the mean loss, which keeps an
      unregularised softmax from overfitting wide, noisy features.
    * prototype weight and perturbation: aPY's published values.

    Args:
        data: The dataset (its training split).
        size: ``"default"`` or ``"quick"`` (a smaller model, shorter run, same rules).

    Returns:
        A validated config.

    Example:
        >>> generic_config(data).model.conditioning  # doctest: +SKIP
        'mean'
    """
    if size not in _DEFAULT_ITERATIONS:
        raise ConfigError(f"Unknown size {size!r}; choose default or quick.")
    dim, num_train = data.feature_dim, data.num_train
    hidden = min(512, max(64, 2 * dim))
    if size == "quick":
        hidden = max(32, hidden // 2)
    batch = max(1, min(128, max(32, num_train // 8), num_train))
    per_epoch = max(1, num_train // batch)
    low, high = _DEFAULT_ITERATIONS[size]
    iterations = min(high, max(low, _DEFAULT_EPOCHS * per_epoch))
    epochs = max(1, math.ceil(iterations / per_epoch))
    step_epochs = max(1, math.ceil(epochs / 3))
    relation_epochs = min(50, max(2, math.ceil(500 / max(1, math.ceil(num_train / batch)))))
    samples = int(min(5000, max(50, round(2 * num_train / data.num_seen))))
    paper = PAPER_PRESETS["apy"]
    return GSMFlowConfig(
        model=ModelConfig(
            num_blocks=3,
            hidden_features=hidden,
            semantic_features=min(1024, max(32, dim // 2)),
            conditioning="mean",
        ),
        training=dataclasses.replace(
            paper.training,
            epochs=epochs,
            batch_size=batch,
            lr_step_epochs=step_epochs,
            lr_gamma=0.5,
            max_iterations=iterations,
        ),
        mining=dataclasses.replace(
            paper.mining,
            enabled=False,
            relation_epochs=relation_epochs,
            relation_batch_size=batch,
            relation_hidden=hidden,
        ),
        evaluation=dataclasses.replace(
            paper.evaluation,
            samples_per_class=samples,
            oversample=oversample_rule(samples, dim, data.num_unseen),
            classifier_lr=1e-2,
            classifier_lr_schedule="cosine",
            classifier_batch_size=min(1200, num_train),
            # LogisticRegression's default penalty (C = 1) per sample of the classifier's set
            classifier_weight_decay=1.0 / (num_train + samples * data.num_unseen),
            eval_every=max(1, iterations // 10),
            eval_start=iterations // 2,
        ),
        seed=0,
    )


#: Draws per unseen class the oversampling rule aims at, per feature dimension.
_DRAWS_PER_DIMENSION = 50
#: The generated set's bound under oversampling: 512 MiB of fp32 features.
_GENERATED_BYTES = 512 * 2**20


def oversample_rule(samples_per_class: int, feature_dim: int, num_unseen: int) -> int:
    """Draws per generated sample (``EvaluationConfig.oversample``) of the data-derived presets.

    ``ceil(50 * D / samples_per_class)``, so that each unseen class gets about
    ``50 * D`` draws, but no more than keeps ``samples_per_class * num_unseen *
    oversample`` fp32 features of dimension ``D`` within 512 MiB; at least 1.

    Example:
        >>> oversample_rule(290, 64, 3)  # the digits: 12 draws per sample
        12
        >>> oversample_rule(593, 2048, 12)  # aPY-sized: bounded by memory
        9
        >>> oversample_rule(5000, 64, 3)
        1
    """
    wanted = -(-_DRAWS_PER_DIMENSION * feature_dim // samples_per_class)
    rows = _GENERATED_BYTES // (4 * feature_dim)
    bound = rows // (samples_per_class * num_unseen)
    return max(1, min(wanted, bound))


def smoke_variant(config: GSMFlowConfig, data: GZSLData) -> GSMFlowConfig:
    """A seconds-long run for tests and CI: tiny nets, 40 iterations. Its numbers mean nothing."""
    batch = min(64, data.num_train)
    return dataclasses.replace(
        config,
        model=dataclasses.replace(
            config.model, num_blocks=2, hidden_features=64, semantic_features=32
        ),
        training=dataclasses.replace(
            config.training, batch_size=batch, max_iterations=40, lr=1e-3, lr_step_epochs=100
        ),
        mining=dataclasses.replace(
            config.mining,
            relation_epochs=1,
            relation_batch_size=batch,
            relation_hidden=64,
            loops=2,
        ),
        evaluation=dataclasses.replace(
            config.evaluation,
            samples_per_class=50,
            oversample=1,
            classifier_batch_size=256,
            classifier_epochs=5,
            classifier_min_steps=0,
            eval_every=20,
            eval_start=20,
        ),
    )


def preset_config(name: str, data: GZSLData, kind: str = "default") -> GSMFlowConfig:
    """The config of preset ``kind`` for dataset ``name``.

    * ``default``: :func:`generic_config` (rules derived from the data) for every dataset.
    * ``quick``: ``generic_config(data, "quick")``: a smaller model, a shorter run.
    * ``paper``: the published hyperparameters (``PAPER_PRESETS``); a dataset
      without published settings gets :func:`generic_config`'s schedule with
      the paper's model and losses (``conditioning="couplings"``, mining on).
    * ``smoke``: seconds, for tests (:func:`smoke_variant` of ``default``).

    Args:
        name: dataset name (case-insensitive).
        data: the loaded dataset (the data-derived rules read its sizes).
        kind: ``"default"``, ``"quick"``, ``"paper"`` or ``"smoke"``.

    Returns:
        A validated config.

    Example:
        >>> preset_config("apy", data, "paper").model.num_blocks  # doctest: +SKIP
        5
    """
    if kind not in PRESET_KINDS:
        raise ConfigError(f"Unknown preset {kind!r}; choose from {', '.join(PRESET_KINDS)}.")
    if kind == "paper":
        key = name.lower()
        if key in PAPER_PRESETS:
            return PAPER_PRESETS[key]
        config = generic_config(data)
        return dataclasses.replace(
            config,
            model=dataclasses.replace(config.model, conditioning="couplings"),
            mining=dataclasses.replace(config.mining, enabled=True),
        )
    if kind == "smoke":
        return smoke_variant(generic_config(data), data)
    return generic_config(data, kind)


def run_config(
    dataset: str,
    data: GZSLData,
    preset: str = "default",
    ablate: tuple[str, ...] = (),
    *,
    base: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> GSMFlowConfig:
    """The config a run uses: the preset (or ``base``), then the ablations, then ``overrides``.

    Args:
        dataset: The dataset's name (the ``paper`` preset looks it up).
        data: The loaded dataset (the data-derived rules read its sizes).
        preset: ``"default"``, ``"quick"``, ``"paper"`` or ``"smoke"``; ignored with ``base``.
        ablate: Components to switch off (``GSMFlowConfig.ablate``).
        base: A whole config as :meth:`GSMFlowConfig.to_dict` writes it (e.g. a results
            JSON's ``config``), used instead of the preset: a run replayed exactly.
        overrides: ``"section.field" -> value`` set last (``GSMFlowConfig.with_overrides``).

    The seed is the preset's (or ``base``'s); a run sets its own with
    :meth:`GSMFlowConfig.with_seed`.

    Example:
        >>> run_config("digits", data, "quick", ("mining",)).mining.enabled  # doctest: +SKIP
        False
        >>> lr = {"training.lr": 1e-3}
        >>> run_config("digits", data, overrides=lr).training.lr  # doctest: +SKIP
        0.001
    """
    if base is not None:
        if not isinstance(base, Mapping):
            raise ConfigError(
                f"A config must be a JSON object of sections, got {type(base).__name__}."
            )
        config = GSMFlowConfig.from_dict(dict(base))
    else:
        config = preset_config(dataset, data, preset)
    config = config.ablate(list(ablate))
    return config.with_overrides(overrides) if overrides else config


def imbalance_warning(config: GSMFlowConfig, data: GZSLData) -> str | None:
    """A warning when generated unseen features outnumber real seen ones by far (or the reverse).

    The softmax classifier is trained on both; a 10-to-1 imbalance pushes its
    predictions to one side, so that S or U collapses.

    Example:
        >>> imbalance_warning(config, data) is None  # doctest: +SKIP
        True
    """
    generated = config.evaluation.samples_per_class * data.num_unseen
    ratio = generated / data.num_train
    if ratio > 10 or ratio < 0.1:
        return (
            f"the classifier sees {generated} generated unseen features against {data.num_train} "
            f"real seen ones ({ratio:.1f}x); accuracy on one side may collapse"
        )
    return None
