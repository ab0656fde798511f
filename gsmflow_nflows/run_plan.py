"""What a bench run will do, before it does it: iterations, evaluations, generated features, time.

:func:`plan_bench` counts the work of a :class:`~gsmflow_nflows.experiment.BenchRequest`
from its config and the data's sizes alone (every flow training, every
evaluation, the generated features and their memory, the classifiers' steps),
and :func:`measure_costs` times a few of each unit (a flow iteration, a
relation-network step, a generated feature, a classifier step) on this machine,
so the plan carries an estimate of the wall time. ``gsmflow bench --dry-run``
prints it; every real bench prints it first.

The estimate is ``units x seconds per unit`` summed over stages, each unit
timed for about a quarter of a second after a warm-up: it leaves out data
loading, scoring the test sets and checkpoints, and a machine shared with
other work is slower than the timing.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from gsmflow_nflows.data import GZSLData
from gsmflow_nflows.evaluation.classifier import classifier_epochs, train_softmax_classifier
from gsmflow_nflows.evaluation.protocols import evaluation_points
from gsmflow_nflows.experiment import BenchRequest
from gsmflow_nflows.losses.boundary import RelationNetwork, train_relation_network
from gsmflow_nflows.model import generate_features
from gsmflow_nflows.runtime import resolve_device, synchronized_clock
from gsmflow_nflows.training.config import GSMFlowConfig
from gsmflow_nflows.training.frozen import predicted_freeze, weights_rms
from gsmflow_nflows.training.step import autocast_context

__all__ = [
    "MANY_SEEDS",
    "EvaluationPlan",
    "RunPlan",
    "TrainingPlan",
    "UnitCosts",
    "measure_costs",
    "plan_bench",
    "plan_train",
]

#: More seeds than this in one bench need an explicit yes (``gsmflow bench --yes``).
MANY_SEEDS = 20


@dataclass(frozen=True)
class UnitCosts:
    """Seconds per unit of work, measured on this machine (:func:`measure_costs`)."""

    flow_iteration: float
    relation_step: float
    generated_feature: float
    classifier_step: float
    #: The RMS of the throwaway flow's weights, for the predicted freeze; ``None``: unknown.
    weights_rms: float | None = None


@dataclass(frozen=True)
class EvaluationPlan:
    """One evaluation: the unseen classes' generated features, then two classifiers.

    ``generated`` features (``generated_bytes`` of them in the flow's float32) join
    the ``train_rows`` real seen ones in the GZSL classifier (``gzsl_steps`` Adam
    steps); the ZSL classifier trains on the generated ones alone (``zsl_steps``).
    """

    unseen_classes: int
    generated: int
    generated_bytes: int
    train_rows: int
    gzsl_steps: int
    zsl_steps: int

    def seconds(self, costs: UnitCosts) -> float:
        """The estimated wall time of this evaluation."""
        return (
            self.generated * costs.generated_feature
            + (self.gzsl_steps + self.zsl_steps) * costs.classifier_step
        )


@dataclass(frozen=True)
class TrainingPlan:
    """One flow training of one seed on a split, and the evaluations made during or after it."""

    split: str
    train_rows: int
    iterations: int
    relation_steps: int
    mining_steps: int
    evaluations: int
    evaluation: EvaluationPlan
    #: Where the schedule is predicted to stop taking steps (``training.freeze_tolerance``,
    #: from the weights' RMS at initialisation); ``None``: it trains to the end, or unknown.
    frozen_at: int | None = None

    @property
    def steps(self) -> int:
        """Flow iterations that take an optimizer step."""
        return self.iterations if self.frozen_at is None else self.frozen_at

    def seconds(self, costs: UnitCosts) -> float:
        """The estimated wall time of this training and its evaluations."""
        return (
            self.steps * costs.flow_iteration
            + (self.relation_steps + self.mining_steps) * costs.relation_step
            + self.evaluations * self.evaluation.seconds(costs)
        )


@dataclass(frozen=True)
class RunPlan:
    """The work of one bench: per seed, its trainings; beside them, the baselines.

    ``baseline_steps`` are the classifier steps of the baselines of one seed (the
    linear-Gaussian generator's two classifiers and the seen-only one; ESZSL is
    closed form). ``costs`` is ``None`` when nothing was timed.

    Example:
        >>> plan = plan_bench(BenchRequest("digits", seeds=(0, 1, 2)))  # doctest: +SKIP
        >>> print("\\n".join(plan.lines()))  # doctest: +SKIP
    """

    dataset: str
    preset: str
    protocol: str
    seeds: tuple[int, ...]
    device: str
    precision: str
    feature_dim: int
    trainings: tuple[TrainingPlan, ...]
    baseline_steps: int
    costs: UnitCosts | None = None

    @property
    def iterations_per_seed(self) -> int:
        """Flow iterations of one seed, over all its trainings."""
        return sum(training.iterations for training in self.trainings)

    @property
    def evaluations_per_seed(self) -> int:
        """Evaluations (generation + classifiers) of one seed."""
        return sum(training.evaluations for training in self.trainings)

    def seconds_per_seed(self) -> float | None:
        """The estimated wall time of one seed, baselines included; ``None`` if not timed."""
        if self.costs is None:
            return None
        trainings = sum(training.seconds(self.costs) for training in self.trainings)
        return trainings + self.baseline_steps * self.costs.classifier_step

    def seconds(self) -> float | None:
        """The estimated wall time of the whole bench; ``None`` if not timed."""
        per_seed = self.seconds_per_seed()
        return None if per_seed is None else per_seed * len(self.seeds)

    def estimate(self) -> str:
        """The estimated wall time in words: ``"about 8.5 min in all"``, or ``"not timed"``."""
        total = self.seconds()
        return "not timed" if total is None else f"about {_duration(total)} in all"

    def to_dict(self) -> dict[str, object]:
        """The plan as JSON-ready values, the estimates included."""
        return {
            **asdict(self),
            "seeds": list(self.seeds),
            "seconds_per_seed": self.seconds_per_seed(),
            "seconds": self.seconds(),
        }

    def lines(self) -> list[str]:
        """The plan as text, one line per fact."""
        seeds = self.seeds
        seed_text = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {seeds[0]}-{seeds[-1]}"
        what = "training only" if self.protocol == "train" else f"protocol {self.protocol}"
        lines = [
            f"plan: {self.dataset}, preset {self.preset}, {what}, "
            f"{len(seeds)} x ({seed_text}), {self.device}, {self.precision}"
        ]
        for training in self.trainings:
            name = "trainval" if training.split == "test" else "train (validation split)"
            mining = (
                f", then {training.relation_steps:,} relation-network and "
                f"{training.mining_steps:,} mining steps first"
                if training.relation_steps
                else ""
            )
            frozen = (
                f" (steps stop at about {training.frozen_at:,}: the rest cannot move the weights)"
                if training.frozen_at is not None
                else ""
            )
            evaluations = (
                f"; {_count(training.evaluations, 'evaluation')}" if training.evaluations else ""
            )
            lines.append(
                f"  per seed: flow {training.iterations:,} iterations{frozen} on {name}, "
                f"{training.train_rows:,} features{mining}{evaluations}"
            )
            evaluation = training.evaluation
            rows = evaluation.train_rows + evaluation.generated
            if not training.evaluations:
                continue
            lines.append(
                f"    each evaluation: {evaluation.unseen_classes} unseen classes, "
                f"{evaluation.generated:,} generated features x {self.feature_dim}-d "
                f"({_size(evaluation.generated_bytes)}); GZSL classifier "
                f"{evaluation.gzsl_steps:,} steps on {rows:,} "
                f"rows, ZSL classifier {evaluation.zsl_steps:,} steps"
            )
        if self.baseline_steps:
            lines.append(
                f"  baselines per seed: ESZSL, linear-Gaussian and seen-only, "
                f"{self.baseline_steps:,} classifier steps"
            )
        costs = self.costs
        if costs is not None:
            relation = (
                f"{costs.relation_step * 1e3:.1f} ms per relation step, "
                if costs.relation_step
                else ""
            )
            lines.append(
                f"  timed here: {costs.flow_iteration * 1e3:.1f} ms per flow iteration, "
                f"{relation}{costs.generated_feature * 1e6:.2f} us per generated feature, "
                f"{costs.classifier_step * 1e3:.1f} ms per classifier step"
            )
            per_seed = self.seconds_per_seed() or 0.0
            lines.append(
                f"  estimate: {_duration(per_seed)} per seed, "
                f"{_duration(per_seed * len(seeds))} in all "
                "(without data loading and scoring; more on a busy machine)"
            )
        return lines


def plan_bench(
    request: BenchRequest,
    data: GZSLData,
    config: GSMFlowConfig,
    *,
    val_data: GZSLData | None = None,
    costs: UnitCosts | None = None,
) -> RunPlan:
    """Count the work of a bench request from its config and the data's sizes.

    Args:
        request: the :class:`~gsmflow_nflows.experiment.BenchRequest`.
        data: its dataset's ``test`` split (trainval and the test sets).
        config: the config it runs (:func:`~gsmflow_nflows.experiment.request_config`).
        val_data: the ``val`` split; needed for protocol ``val`` and for calibration.
        costs: seconds per unit (:func:`measure_costs`), for an estimate; ``None``: counts only.

    Returns:
        The :class:`RunPlan`.

    Example:
        >>> plan = plan_bench(request, data, request_config(request, data))  # doctest: +SKIP
        >>> plan.iterations_per_seed  # doctest: +SKIP
        1000
    """
    protocol, calibrate = request.protocol, request.calibrate
    rms = None if costs is None else costs.weights_rms
    if val_data is None and (protocol == "val" or calibrate):
        raise ValueError(f"protocol {protocol!r} (or calibration) needs val_data to plan.")
    trainings: list[TrainingPlan] = []
    if protocol == "paper":
        trainings.append(_training(config, data, evaluations=None, rms=rms))
    elif val_data is not None and protocol == "val":
        # evaluations on the validation split, then one on test
        trainings.append(_training(config, val_data, evaluations=None, rms=rms))
        trainings.append(_training(config, data, evaluations=1, rms=rms))
    else:
        trainings.append(_training(config, data, evaluations=2 if calibrate else 1, rms=rms))
        if val_data is not None and calibrate:
            trainings.append(_training(config, val_data, evaluations=1, rms=rms))
    baseline_steps = 0
    if request.baselines:
        test = trainings[0] if protocol != "val" else trainings[1]
        seen_only = _steps(data.num_train, config)
        baseline_steps = test.evaluation.gzsl_steps + test.evaluation.zsl_steps + seen_only
        if calibrate and val_data is not None:
            baseline_steps += _evaluation(config, val_data).gzsl_steps
    return RunPlan(
        dataset=data.name,
        preset=request.preset,
        protocol=protocol,
        seeds=tuple(request.seeds),
        device=str(resolve_device(request.device)),
        precision=request.precision,
        feature_dim=data.feature_dim,
        trainings=tuple(trainings),
        baseline_steps=baseline_steps,
        costs=costs,
    )


def plan_train(
    config: GSMFlowConfig,
    data: GZSLData,
    *,
    preset: str,
    seed: int,
    device: str | torch.device | None = None,
    precision: str = "fp32",
    costs: UnitCosts | None = None,
) -> RunPlan:
    """The work of ``gsmflow train``: one training on trainval, no evaluation, no baselines.

    Example:
        >>> plan = plan_train(config, data, preset="default", seed=0)  # doctest: +SKIP
        >>> plan.evaluations_per_seed  # doctest: +SKIP
        0
    """
    rms = None if costs is None else costs.weights_rms
    return RunPlan(
        dataset=data.name,
        preset=preset,
        protocol="train",
        seeds=(seed,),
        device=str(resolve_device(device)),
        precision=precision,
        feature_dim=data.feature_dim,
        trainings=(_training(config, data, evaluations=0, rms=rms),),
        baseline_steps=0,
        costs=costs,
    )


def measure_costs(
    config: GSMFlowConfig,
    data: GZSLData,
    *,
    device: str | torch.device | None = None,
    precision: str = "fp32",
    seconds: float = 0.25,
) -> UnitCosts:
    """Time each unit of a run's work on this machine for about ``seconds``, changing nothing.

    A throwaway flow (the config's shape, this data) takes a few warm-up and
    then timed training steps, then generates features of one unseen class; a
    relation network (when mining is on) and a softmax classifier take timed
    steps at their batch sizes. Each unit is probed briefly, then timed over
    about ``seconds`` (at least 3 steps). Torch's global random state is
    restored afterwards and the run's own streams are untouched, so a run that
    follows gives the numbers it would have given without the measurement.

    Args:
        config: the run's config.
        data: the training data (its sizes and feature width set the cost).
        device: where the run will go; ``None`` picks CUDA when available.
        precision: ``"fp32"`` or ``"bf16"``.
        seconds: about how long to time each unit.

    Returns:
        The :class:`UnitCosts`.

    Example:
        >>> costs = measure_costs(config, data)  # doctest: +SKIP
        >>> costs.flow_iteration > 0  # doctest: +SKIP
        True
    """
    from gsmflow_nflows.training.trainer import GSMFlowTrainer

    device = resolve_device(device)
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        trainer = GSMFlowTrainer(config, data, device=device, precision=precision)
        flow_iteration, flow = trainer.time_iterations(seconds)
        embeddings = data.unseen_embeddings[:1].to(device)
        generator = torch.Generator().manual_seed(0)

        def generate(count: int) -> None:
            with autocast_context(device, precision):
                generate_features(flow, embeddings, count, generator=generator)

        generated_feature = _timed(device, generate, seconds, probe=256, most=1 << 17)
        relation_step = (
            _relation_step(config, data, device, seconds) if config.mining.enabled else 0.0
        )
        classifier_step = _classifier_step(config, data, device, seconds)
    return UnitCosts(
        flow_iteration,
        relation_step,
        generated_feature,
        classifier_step,
        weights_rms=weights_rms(list(flow.parameters())),
    )


def _training(
    config: GSMFlowConfig, data: GZSLData, *, evaluations: int | None, rms: float | None = None
) -> TrainingPlan:
    """One training on ``data``; ``evaluations=None``: the reference's evaluation points."""
    iterations = config.training.iterations(data.num_train)
    if evaluations is None:
        due = evaluation_points(config, iterations)
        evaluations = sum(1 for iteration in range(1, iterations + 1) if due(iteration))
    mining = config.mining
    relation_steps = mining_steps = 0
    if mining.enabled:
        per_epoch = math.ceil(data.num_train / min(mining.relation_batch_size, data.num_train))
        relation_steps, mining_steps = mining.relation_epochs * per_epoch, mining.loops * per_epoch
    return TrainingPlan(
        split=data.split,
        train_rows=data.num_train,
        iterations=iterations,
        relation_steps=relation_steps,
        mining_steps=mining_steps,
        evaluations=evaluations,
        evaluation=_evaluation(config, data),
        frozen_at=None if rms is None else predicted_freeze(config.training, data.num_train, rms),
    )


def _evaluation(config: GSMFlowConfig, data: GZSLData) -> EvaluationPlan:
    generated = data.num_unseen * config.evaluation.generated_per_class()
    return EvaluationPlan(
        unseen_classes=data.num_unseen,
        generated=generated,
        generated_bytes=generated * data.feature_dim * 4,
        train_rows=data.num_train,
        gzsl_steps=_steps(data.num_train + generated, config),
        zsl_steps=_steps(generated, config),
    )


def _steps(rows: int, config: GSMFlowConfig) -> int:
    """Adam steps of a classifier on ``rows`` training rows under ``config``."""
    evaluation = config.evaluation
    batch = min(evaluation.classifier_batch_size, rows)
    epochs = classifier_epochs(
        rows, batch, evaluation.classifier_epochs, evaluation.classifier_min_steps
    )
    return epochs * math.ceil(rows / batch)


def _timed(
    device: torch.device,
    run: Callable[[int], None],
    seconds: float,
    *,
    probe: int = 3,
    most: int = 1000,
) -> float:
    """Seconds per unit of ``run(count)``: a warm-up, a probe of ``probe`` units, then about
    ``seconds`` worth of units (between ``probe`` and ``most``) timed in one call."""
    run(1)  # warm-up
    started = synchronized_clock(device)
    run(probe)
    per_unit = max((synchronized_clock(device) - started) / probe, 1e-9)
    count = min(most, max(probe, int(seconds / per_unit)))
    started = synchronized_clock(device)
    run(count)
    return (synchronized_clock(device) - started) / count


def _relation_step(
    config: GSMFlowConfig, data: GZSLData, device: torch.device, seconds: float
) -> float:
    """Seconds per relation-network step at the mining batch size (one batch an epoch)."""
    mining = config.mining
    batch = min(mining.relation_batch_size, data.num_train)
    net = RelationNetwork(
        data.feature_dim,
        data.embedding_dim,
        mining.relation_hidden,
        generator=torch.Generator().manual_seed(0),
    ).to(device)
    features = data.train_features[:batch].to(device)
    labels = data.train_labels[:batch].to(device)
    embeddings = data.seen_embeddings.to(device)

    def run(steps: int) -> None:
        train_relation_network(
            net,
            features,
            labels,
            embeddings,
            epochs=steps,
            batch_size=batch,
            lr=mining.relation_lr,
            weight_decay=mining.relation_weight_decay,
            generator=torch.Generator().manual_seed(0),
        )

    return _timed(device, run, seconds)


def _classifier_step(
    config: GSMFlowConfig, data: GZSLData, device: torch.device, seconds: float
) -> float:
    """Seconds per softmax-classifier step at the evaluation's batch size."""
    evaluation = config.evaluation
    batch = evaluation.classifier_batch_size
    num_classes = data.num_seen + data.num_unseen
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(batch, data.feature_dim, generator=generator).to(device)
    labels = torch.arange(batch).remainder(num_classes).to(device)

    def run(steps: int) -> None:
        train_softmax_classifier(
            features,
            labels,
            num_classes,
            lr=evaluation.classifier_lr,
            batch_size=batch,
            epochs=steps,  # one step an epoch
            generator=generator,
        )

    return _timed(device, run, seconds)


def _count(number: int, noun: str) -> str:
    return f"{number:,} {noun}{'' if number == 1 else 's'}"


def _size(num_bytes: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if num_bytes >= scale:
            return f"{num_bytes / scale:.1f} {unit} fp32"
    return f"{num_bytes} B fp32"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
