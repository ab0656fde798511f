"""The three evaluation protocols of ``gsmflow bench``, always labelled by name.

* ``paper``: the authors' protocol. Every ``eval_every`` iterations after
  ``eval_start`` (and at the end) generate unseen features, train the
  classifier, score S/U/H on the TEST sets after every classifier epoch, and
  report the best H over all evaluations and epochs (and, separately, the best
  T1). It selects on the test set: use it only to compare with published numbers.
* ``val``: the same evaluations, but on the validation split (``split="val"``:
  the flow trains on ``train_loc``, ``val_loc`` classes act as unseen). The
  iteration and classifier epoch with the best validation H (T1: best
  validation T1) are chosen there; then a fresh flow trains on ``trainval`` to
  the same fraction of its schedule, and ONE evaluation on the test sets, with
  the chosen classifier epoch count, is reported.
* ``final``: the fixed schedule; the last iteration and the last classifier epoch,
  one evaluation on the test sets.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from nflows.flows.base import Flow

from gsmflow_nflows.data import GZSLData
from gsmflow_nflows.errors import ConfigError
from gsmflow_nflows.evaluation.calibration import choose_offset_on_validation
from gsmflow_nflows.evaluation.classifier import classifier_epochs
from gsmflow_nflows.evaluation.gzsl import evaluate_generated
from gsmflow_nflows.model import generate_features
from gsmflow_nflows.runtime import Stream, seeded_generator
from gsmflow_nflows.training.config import GSMFlowConfig
from gsmflow_nflows.training.step import autocast_context
from gsmflow_nflows.training.trainer import GSMFlowTrainer, ProgressFn

PROTOCOLS = ("paper", "val", "final")

#: ``on_evaluation(seed, split, record)``: called with every evaluation record as it is made;
#: ``split`` is ``"val"`` or ``"test"``, ``record`` is :func:`evaluate_flow`'s (a calibrated
#: one also holds ``"calibration"``, its offset).
EvaluationLog = Callable[[int, str, dict[str, Any]], None]


@dataclass(frozen=True)
class ProtocolResult:
    """One seed's result under one protocol. Accuracies are fractions in ``[0, 1]``.

    ``iteration`` and ``classifier_epoch`` (1-based) say which model and
    classifier the H figure comes from; ``t1_iteration``/``t1_epoch`` the same for T1.
    """

    protocol: str
    seed: int
    S: float
    U: float
    H: float
    T1: float
    iteration: int
    classifier_epoch: int
    t1_iteration: int
    t1_epoch: int
    seconds: float
    #: The test-set evaluation records the figures come from (``paper``: every evaluation).
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    #: Protocol ``val``: every evaluation record on the validation split, in order; else empty.
    validation: list[dict[str, Any]] = field(default_factory=list)
    #: With ``calibrate``: ``{"offset", "S", "U", "H", "validation_H"}``, the offset chosen on
    #: the validation split and the test scores it gives (T1 does not change); else ``None``.
    calibrated: dict[str, float] | None = None
    #: ``[{"class", "name", "split", "accuracy"}]`` of the classifier the H figure comes
    #: from (:func:`per_class_table`); protocols ``final`` and ``val``, empty for ``paper``.
    per_class: list[dict[str, Any]] = field(default_factory=list)
    #: The iteration after which the (test) flow took no more steps, because the rest of
    #: its schedule could not move the weights by ``training.freeze_tolerance`` of their
    #: RMS (:mod:`gsmflow_nflows.training.frozen`); ``None`` when it trained to the end.
    frozen_at: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


def evaluate_flow(
    flow: Flow,
    data: GZSLData,
    config: GSMFlowConfig,
    iteration: int,
    *,
    epochs: int | None = None,
    last_epoch_only: bool = False,
    calibration: float = 0.0,
    per_class: bool | None = None,
    precision: str = "fp32",
) -> dict[str, Any]:
    """Generate unseen features with ``flow`` and score GZSL (S/U/H) and ZSL (T1) per epoch.

    Args:
        flow: the trained flow.
        data: the dataset whose test sets are scored (its unseen classes are generated).
        config: the run's config (evaluation section).
        iteration: the flow's iteration (recorded, and seeds the generation).
        epochs: classifier epochs; default ``config.evaluation.classifier_epochs``.
        last_epoch_only: score only the classifier's last epoch (protocol ``final``).
        calibration: calibrated-stacking offset of the GZSL classifier (0: none).
        per_class: record each class's accuracy (``"seen_per_class"``,
            ``"unseen_per_class"`` in the ``gzsl`` entries, local label order); default:
            with ``last_epoch_only`` (one scored epoch), not otherwise.
        precision: ``"bf16"`` generates under bfloat16 autocast (the features are stored
            in the flow's float32); the classifiers always train in float32.

    Returns:
        ``{"iteration", "gzsl": [{"S", "U", "H"} per scored epoch], "zsl_t1": [T1 per
        scored epoch], "gzsl_epochs", "zsl_epochs"}`` (the epochs each classifier trained).
    """
    per_class = last_epoch_only if per_class is None else per_class
    evaluation = config.evaluation
    epochs = epochs if epochs is not None else evaluation.classifier_epochs
    device = next(flow.parameters()).device
    generator = seeded_generator(config.seed, Stream.GENERATION, iteration)
    with autocast_context(device, precision):
        generated, generated_labels = generate_features(
            flow,
            data.unseen_embeddings.to(device),
            evaluation.generated_per_class(),
            generator=generator,
        )
    common = {
        **evaluation.classifier_settings(),
        "epochs": epochs,
        "last_epoch_only": last_epoch_only,
    }
    gzsl, zsl = evaluate_generated(
        data,
        generated,
        generated_labels,
        gzsl_generator=seeded_generator(config.seed, Stream.GZSL_CLASSIFIER, iteration),
        zsl_generator=seeded_generator(config.seed, Stream.ZSL_CLASSIFIER, iteration),
        calibration=calibration,
        generated_weight=evaluation.generated_weight(),
        per_class=per_class,
        **common,
    )
    batch, floor = evaluation.classifier_batch_size, evaluation.classifier_min_steps
    num_generated = generated.shape[0]
    return {
        "iteration": iteration,
        "gzsl": [_scores_dict(scores) for scores in gzsl],
        "zsl_t1": list(zsl),
        # Epochs trained (the step floor may raise them above ``epochs``).
        "gzsl_epochs": classifier_epochs(data.num_train + num_generated, batch, epochs, floor),
        "zsl_epochs": classifier_epochs(num_generated, batch, epochs, floor),
    }


def _scores_dict(scores: Any) -> dict[str, Any]:
    """A ``GZSLScores`` as a dict, without per-class entries it does not hold."""
    return {key: value for key, value in asdict(scores).items() if value is not None}


def per_class_table(data: GZSLData, scores: dict[str, Any]) -> list[dict[str, Any]]:
    """``[{"class", "name", "split", "accuracy"}]`` for every class, from a per-class record.

    ``scores`` is one ``gzsl`` entry of :func:`evaluate_flow` made with ``per_class``;
    ``class`` is the dataset's original class id. The seen entries average to S, the
    unseen ones to U (classes without test images have ``accuracy`` ``None``).

    Example:
        >>> per_class_table(data, record["gzsl"][-1])[0]  # doctest: +SKIP
        {'class': 0, 'name': 'zero', 'split': 'seen', 'accuracy': 0.97}
    """
    rows = []
    for split, classes in (("seen", data.seen_classes), ("unseen", data.unseen_classes)):
        accuracies = scores[f"{split}_per_class"]
        for index, class_id in enumerate(classes.tolist()):
            accuracy = accuracies[index] if index < len(accuracies) else float("nan")
            rows.append(
                {
                    "class": class_id,
                    "name": data.class_names[class_id],
                    "split": split,
                    "accuracy": None if accuracy != accuracy else accuracy,  # nan -> None
                }
            )
    return rows


def choose_val_calibration(
    flow: Flow, val_data: GZSLData, config: GSMFlowConfig, *, precision: str = "fp32"
) -> dict[str, float]:
    """Calibrated stacking's offset, chosen on the validation split with a flow trained there.

    Generates the validation-unseen classes with ``flow`` (trained on ``train_loc``),
    trains the GZSL classifier as every evaluation does (last epoch) and picks the
    offset maximising validation H (:func:`choose_offset_on_validation`). The test set is
    not read. ``precision="bf16"`` generates under bfloat16 autocast, as
    :func:`evaluate_flow` does.

    Returns:
        ``{"offset", "validation_H", "validation_H_uncalibrated"}``.
    """
    evaluation = config.evaluation
    device = next(flow.parameters()).device
    with autocast_context(device, precision):
        generated, labels = generate_features(
            flow,
            val_data.unseen_embeddings.to(device),
            evaluation.generated_per_class(),
            generator=seeded_generator(config.seed, Stream.CALIBRATION_GENERATION),
        )
    return choose_offset_on_validation(
        val_data,
        generated,
        labels,
        evaluation.classifier_settings(),
        generator=seeded_generator(config.seed, Stream.CALIBRATION_CLASSIFIER),
        generated_weight=evaluation.generated_weight(),
    )


def _best(records: list[dict[str, Any]]) -> tuple[dict[str, Any], int, dict[str, Any], int]:
    """(record, epoch index) of the best H, and of the best T1; first wins ties."""
    best_h = max(
        ((r, e) for r in records for e in range(len(r["gzsl"]))),
        key=lambda pair: pair[0]["gzsl"][pair[1]]["H"],
    )
    best_t1 = max(
        ((r, e) for r in records for e in range(len(r["zsl_t1"]))),
        key=lambda pair: pair[0]["zsl_t1"][pair[1]],
    )
    return best_h[0], best_h[1], best_t1[0], best_t1[1]


def evaluation_points(config: GSMFlowConfig, total: int) -> Callable[[int], bool]:
    """The reference's schedule: every ``eval_every`` iterations from ``eval_start``; the end."""
    evaluation = config.evaluation

    def due(iteration: int) -> bool:
        if iteration == total:
            return True
        return iteration >= evaluation.eval_start and iteration % evaluation.eval_every == 0

    return due


def batches_within(config: GSMFlowConfig, data: GZSLData) -> GSMFlowConfig:
    """``config`` with its flow and relation batch sizes clamped to ``data``'s training set.

    The validation split trains on fewer images (``train_loc``) than the
    configs derived from trainval expect; on a small dataset a batch could
    exceed it.

    Example:
        >>> small = batches_within(config, val_data)  # doctest: +SKIP
        >>> small.training.batch_size <= val_data.num_train  # doctest: +SKIP
        True
    """
    training, mining, n = config.training, config.mining, data.num_train
    if training.batch_size <= n and mining.relation_batch_size <= n:
        return config
    return dataclasses.replace(
        config,
        training=dataclasses.replace(training, batch_size=min(training.batch_size, n)),
        mining=dataclasses.replace(mining, relation_batch_size=min(mining.relation_batch_size, n)),
    )


@dataclass(frozen=True)
class _Run:
    """What every protocol of one seed shares: the config, the data and the trainers' options."""

    protocol: str
    config: GSMFlowConfig
    load_data: Callable[[str], GZSLData]
    device: str | torch.device | None
    precision: str
    checkpoint_dir: Path | None
    checkpoint_every: int
    resume: bool
    progress: ProgressFn | None
    progress_every: int = 10
    on_evaluation: EvaluationLog | None = None
    checkpoint_seconds: float | None = None

    def trainer(self, data: GZSLData, tag: str) -> GSMFlowTrainer:
        """A trainer for ``data``, checkpointing to ``PROTOCOL-TAG-seedN.pt`` when asked to."""
        path = None
        if self.checkpoint_dir is not None:
            path = self.checkpoint_dir / f"{self.protocol}-{tag}-seed{self.config.seed}.pt"
        return GSMFlowTrainer(
            batches_within(self.config, data) if tag == "val" else self.config,
            data,
            device=self.device,
            precision=self.precision,
            checkpoint_path=path,
            checkpoint_every=self.checkpoint_every,
            checkpoint_seconds=self.checkpoint_seconds,
        )

    def progress_of(self, data: GZSLData) -> ProgressFn | None:
        """``progress`` for a trainer on ``data``; on the validation split stages start "val "."""
        progress = self.progress
        if progress is None or data.split != "val":
            return progress
        return lambda stage, done, total, losses: progress(f"val {stage}", done, total, losses)

    def fit(self, trainer: GSMFlowTrainer, stop_after: int | None = None) -> Flow:
        """Train (or resume) ``trainer`` without evaluations."""
        return trainer.fit(
            resume=self.resume,
            progress=self.progress_of(trainer.data),
            progress_every=self.progress_every,
            stop_after=stop_after,
        )

    def evaluate(
        self, flow: Flow, data: GZSLData, iteration: int, **options: Any
    ) -> dict[str, Any]:
        """:func:`evaluate_flow` with this run's config; the record also goes to on_evaluation."""
        record = evaluate_flow(
            flow, data, self.config, iteration, precision=self.precision, **options
        )
        if self.on_evaluation is not None:
            offset = options.get("calibration", 0.0)
            logged = {**record, "calibration": offset} if offset else record
            self.on_evaluation(self.config.seed, data.split, logged)
        return record

    def fit_with_evaluations(self, data: GZSLData, tag: str) -> GSMFlowTrainer:
        """Train on ``data``, evaluating on its own test sets at the reference's points."""
        trainer = self.trainer(data, tag)

        def evaluate(iteration: int, flow: Flow) -> dict[str, Any]:
            return self.evaluate(flow, data, iteration)

        trainer.fit(
            resume=self.resume,
            progress=self.progress_of(data),
            progress_every=self.progress_every,
            evaluate=evaluate,
            evaluate_at=evaluation_points(self.config, trainer.total_iterations),
        )
        return trainer

    def result(
        self,
        h: tuple[dict[str, Any], int],
        t1: tuple[dict[str, Any], int],
        evaluations: list[dict[str, Any]],
        **fields: Any,
    ) -> ProtocolResult:
        """The result whose H comes from record ``h[0]``'s epoch ``h[1]``, T1 from ``t1``."""
        (record_h, epoch_h), (record_t1, epoch_t1) = h, t1
        scores = record_h["gzsl"][epoch_h]
        values: dict[str, Any] = {
            "protocol": self.protocol,
            "seed": self.config.seed,
            "S": scores["S"],
            "U": scores["U"],
            "H": scores["H"],
            "T1": record_t1["zsl_t1"][epoch_t1],
            "iteration": record_h["iteration"],
            "classifier_epoch": epoch_h + 1,
            "t1_iteration": record_t1["iteration"],
            "t1_epoch": epoch_t1 + 1,
            "seconds": 0.0,
            "evaluations": evaluations,
        }
        if "seen_per_class" in scores:
            values["per_class"] = per_class_table(self.load_data("test"), scores)
        return ProtocolResult(**{**values, **fields})


def _final(run: _Run, calibrate: bool) -> ProtocolResult:
    """The fixed schedule, scored once at its last iteration and classifier epoch."""
    config, test_data = run.config, run.load_data("test")
    trainer = run.trainer(test_data, "test")
    flow = run.fit(trainer)
    total = trainer.total_iterations
    record = run.evaluate(flow, test_data, total, last_epoch_only=True)
    fields = {
        "classifier_epoch": record["gzsl_epochs"],
        "t1_epoch": record["zsl_epochs"],
        "frozen_at": trainer.frozen_at,
    }
    if not calibrate:
        return run.result((record, 0), (record, 0), [record], **fields)
    val_data = run.load_data("val")
    chosen = choose_val_calibration(
        run.fit(run.trainer(val_data, "val")), val_data, config, precision=run.precision
    )
    calibrated = run.evaluate(
        flow, test_data, total, last_epoch_only=True, calibration=chosen["offset"]
    )
    return run.result(
        (record, 0),
        (record, 0),
        [record],
        **fields,
        calibrated={**chosen, **calibrated["gzsl"][0]},
    )


def _paper(run: _Run) -> ProtocolResult:
    """The authors' protocol: the best H and the best T1 over every test evaluation and epoch."""
    trainer = run.fit_with_evaluations(run.load_data("test"), "test")
    best_h, epoch_h, best_t1, epoch_t1 = _best(trainer.history)
    return run.result(
        (best_h, epoch_h), (best_t1, epoch_t1), trainer.history, frozen_at=trainer.frozen_at
    )


def _val(run: _Run) -> ProtocolResult:
    """Choose the iteration and classifier epoch on the validation split; evaluate once on test."""
    test_data = run.load_data("test")
    val_trainer = run.fit_with_evaluations(run.load_data("val"), "val")
    best_h, epoch_h, best_t1, epoch_t1 = _best(val_trainer.history)
    test_trainer = run.trainer(test_data, "test")

    def on_test_schedule(val_iteration: int) -> int:
        """The same fraction of the (longer or shorter) trainval schedule."""
        fraction = val_iteration / val_trainer.total_iterations
        return max(1, round(fraction * test_trainer.total_iterations))

    chosen = on_test_schedule(best_h["iteration"])
    flow = run.fit(test_trainer, stop_after=chosen)
    record = run.evaluate(flow, test_data, chosen, epochs=epoch_h + 1, per_class=True)
    # Same iteration and a T1 epoch <= the H epoch: that epoch is in ``record`` already
    # (a classifier's first k epochs do not depend on how many follow).
    record_t1, t1_index = record, epoch_t1
    if best_t1["iteration"] != best_h["iteration"] or epoch_t1 > epoch_h:
        # T1 was chosen at another point: train (continue) to it and evaluate once more.
        t1_chosen = on_test_schedule(best_t1["iteration"])
        t1_flow = run.fit(run.trainer(test_data, "test-t1"), stop_after=t1_chosen)
        record_t1 = run.evaluate(t1_flow, test_data, t1_chosen, epochs=epoch_t1 + 1)
        t1_index = len(record_t1["zsl_t1"]) - 1
    return run.result(
        (record, len(record["gzsl"]) - 1),
        (record_t1, t1_index),
        [record, *([record_t1] if record_t1 is not record else [])],
        validation=val_trainer.history,
        frozen_at=test_trainer.frozen_at,
    )


def run_protocol(
    protocol: str,
    config: GSMFlowConfig,
    load_data: Callable[[str], GZSLData],
    *,
    device: str | torch.device | None = None,
    precision: str = "fp32",
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 1000,
    resume: bool = False,
    progress: ProgressFn | None = None,
    calibrate: bool = False,
    progress_every: int = 10,
    on_evaluation: EvaluationLog | None = None,
    checkpoint_seconds: float | None = None,
) -> ProtocolResult:
    """Train and evaluate one seed under ``protocol`` (see the module docstring).

    Args:
        protocol: ``"paper"``, ``"val"`` or ``"final"``.
        config: the run's config (its seed included).
        load_data: ``split -> GZSLData`` (``"test"``; ``"val"`` for the val protocol).
        device: where to run; ``None`` picks CUDA when available.
        precision: ``"fp32"`` or ``"bf16"``.
        checkpoint_dir: folder for this seed's checkpoints, or ``None``.
        checkpoint_every: iterations between checkpoints.
        resume: continue interrupted runs from their checkpoints.
        progress: progress callback passed to the trainers (stage names of the
            validation split's trainers start with ``"val "``).
        calibrate: also report calibrated stacking (protocol ``final`` only): a flow
            trained on the validation split chooses the offset
            (:func:`choose_val_calibration`), then the test classifier is scored
            with it; ``ProtocolResult.calibrated`` holds the result.
        progress_every: the trainers' ``progress_every`` (1: every iteration).
        on_evaluation: called with every evaluation record as it is made
            (:data:`EvaluationLog`); on a resumed run, evaluations after the
            checkpoint are made, and reported, again.
        checkpoint_seconds: also checkpoint after this much wall time since the last one
            (with ``checkpoint_dir``).

    Returns:
        The :class:`ProtocolResult`.

    Example:
        >>> load = lambda split: load_dataset("digits", split=split)  # doctest: +SKIP
        >>> result = run_protocol("final", config, load)  # doctest: +SKIP
        >>> result.H  # doctest: +SKIP
    """
    if protocol not in PROTOCOLS:
        raise ConfigError(f"Unknown protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}.")
    if calibrate and protocol != "final":
        raise ConfigError(
            f"calibrated stacking is offered with protocol 'final' only, not {protocol!r}; "
            "pass calibrate=False or protocol='final'."
        )
    started = time.perf_counter()
    run = _Run(
        protocol,
        config,
        load_data,
        device,
        precision,
        Path(checkpoint_dir) if checkpoint_dir is not None else None,
        checkpoint_every,
        resume,
        progress,
        progress_every,
        on_evaluation,
        checkpoint_seconds,
    )
    if protocol == "final":
        result = _final(run, calibrate)
    elif protocol == "paper":
        result = _paper(run)
    else:
        result = _val(run)
    return dataclasses.replace(result, seconds=time.perf_counter() - started)
