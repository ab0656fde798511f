"""Every call the sweep makes into the trainer, the protocols and the bench, in one place.

``gsmflow_nflows.training.trainer``, ``gsmflow_nflows.evaluation.protocols`` and
``gsmflow_nflows.experiment`` are called from here only, so a change of their
signatures is fixed in this file. Nothing here imports Ray.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from gsmflow_nflows.data import GZSLData, load_dataset
from gsmflow_nflows.evaluation.protocols import (
    PROTOCOLS,
    batches_within,
    evaluate_flow,
    evaluation_points,
    run_protocol,
)
from gsmflow_nflows.experiment import BenchRequest, run_bench
from gsmflow_nflows.runtime import resolve_device
from gsmflow_nflows.training.config import GSMFlowConfig
from gsmflow_nflows.training.presets import run_config
from gsmflow_nflows.training.trainer import GSMFlowTrainer

__all__ = [
    "PROTOCOLS",
    "bench_seed",
    "final_run",
    "length_field",
    "trainval_preset",
    "validation_evaluations",
    "validation_points",
]


def trainval_preset(dataset: str, data_root: str | None, preset: str) -> GSMFlowConfig:
    """The preset's config for ``dataset``, derived from its trainval split's sizes.

    The same config ``gsmflow bench --preset PRESET`` runs (and the ``val``
    protocol selects with). It loads ``split="test"`` to read the sizes, so the
    sweep calls it before the search, never during it.

    Example:
        >>> trainval_preset("digits", None, "smoke").training.max_iterations  # doctest: +SKIP
        40
    """
    data = load_dataset(dataset, data_root=data_root, split="test")
    return run_config(dataset, data, preset)


def validation_points(config: GSMFlowConfig, val_data: GZSLData) -> list[int]:
    """The iterations at which a run of ``config`` on the validation split is evaluated.

    The last one is the run's length (batch sizes clamped to the split as the ``val``
    protocol does).

    Example:
        >>> validation_points(smoke_config, val_data)  # doctest: +SKIP
        [20, 40]
    """
    config = batches_within(config, val_data)
    total = config.training.iterations(val_data.num_train)
    due = evaluation_points(config, total)
    return [iteration for iteration in range(1, total + 1) if due(iteration)]


def length_field(config: GSMFlowConfig, val_data: GZSLData) -> str:
    """``training.max_iterations`` if that cap sets the validation run's length, else epochs.

    Example:
        >>> length_field(smoke_config, val_data)  # doctest: +SKIP
        'training.max_iterations'
    """
    training = batches_within(config, val_data).training
    cap = training.max_iterations
    by_epochs = (val_data.num_train // training.batch_size) * training.epochs
    return "training.max_iterations" if cap is not None and cap < by_epochs else "training.epochs"


def validation_evaluations(
    config: GSMFlowConfig,
    val_data: GZSLData,
    *,
    checkpoint_path: str | Path,
    after: int = 0,
    precision: str = "fp32",
    device: str | None = None,
) -> Iterator[tuple[list[dict[str, Any]], int, str]]:
    """Train ``config`` on the validation split, yielding after each evaluation.

    The trainer runs from one evaluation point to the next (``fit(stop_after=...)``,
    resuming from ``checkpoint_path``), evaluating on the validation classes with
    :func:`evaluate_flow` at :func:`evaluation_points`; so when a value is
    yielded, ``checkpoint_path`` already holds the state after that evaluation,
    and a run restarted from it (``after`` = the last iteration handed on) goes
    on to exactly the records an uninterrupted run gives.

    Args:
        config: the trial's config (its seed included).
        val_data: ``load_dataset(name, split="val")``.
        checkpoint_path: the trainer's checkpoint file (resumed from when it exists).
        after: skip the evaluation points up to this iteration (already handed on).
        precision: ``"fp32"`` or ``"bf16"``.
        device: where to train; ``None`` picks CUDA when available.

    Yields:
        ``(history, total_iterations, device)``: every evaluation record so far
        (:func:`evaluate_flow`'s dicts), the run's length, the device it ran on.

    Example:
        >>> for history, total, device in validation_evaluations(config, val_data,
        ...                                                       checkpoint_path="t.pt"):
        ...     print(history[-1]["iteration"], total)  # doctest: +SKIP
    """
    run_device = resolve_device(device)
    val_data = val_data.to(run_device)
    config = batches_within(config, val_data)
    trainer = GSMFlowTrainer(
        config,
        val_data,
        device=run_device,
        precision=precision,
        checkpoint_path=checkpoint_path,
        checkpoint_every=max(1, config.training.iterations(val_data.num_train)),
    )
    due = evaluation_points(config, trainer.total_iterations)

    def evaluate(iteration: int, flow: Any) -> dict[str, Any]:
        return evaluate_flow(flow, val_data, config, iteration)

    for point in validation_points(config, val_data):
        if point <= after:
            continue
        trainer.fit(resume=True, evaluate=evaluate, evaluate_at=due, stop_after=point)
        yield list(trainer.history), trainer.total_iterations, str(run_device)


def final_run(
    config: GSMFlowConfig,
    dataset: str,
    data_root: str | None,
    *,
    checkpoint_dir: str | Path | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """One seed (``config.seed``) under protocol ``final``: train on trainval, test once.

    With ``checkpoint_dir`` the run checkpoints there and continues an interrupted run.

    Returns:
        ``run_protocol("final", ...).to_dict()`` (S, U, H, T1, seed, seconds, evaluations).

    Example:
        >>> final_run(config.with_seed(1), "digits", None)["H"]  # doctest: +SKIP
        0.41
    """
    run_device = resolve_device(device)
    cache: dict[str, GZSLData] = {}

    def load(split: str) -> GZSLData:
        if split not in cache:
            cache[split] = load_dataset(dataset, data_root=data_root, split=split).to(run_device)
        return cache[split]

    return run_protocol(
        "final", config, load, device=run_device, checkpoint_dir=checkpoint_dir, resume=True
    ).to_dict()


def bench_seed(
    dataset: str,
    data_root: str | None,
    preset: str,
    protocol: str,
    seed: int,
    *,
    baselines: bool = True,
    checkpoint_dir: str | Path | None = None,
    device: str | None = None,
    progress: Callable[[str, int, int, dict[str, float]], None] | None = None,
) -> dict[str, Any]:
    """``gsmflow bench`` for one seed: :func:`run_bench`'s dict (baselines beside).

    Example:
        >>> bench_seed("digits", None, "smoke", "final", 0)["mean"]["H"]  # doctest: +SKIP
        0.39
    """
    request = BenchRequest(
        dataset=dataset,
        data_root=data_root,
        preset=preset,
        protocol=protocol,
        seeds=(seed,),
        baselines=baselines,
        device=device,
        checkpoint_dir=str(checkpoint_dir) if checkpoint_dir is not None else None,
        resume=checkpoint_dir is not None,
    )
    return run_bench(request, progress=progress).to_dict()
