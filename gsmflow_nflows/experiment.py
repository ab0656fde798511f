"""One experiment: GSMFlow on a dataset under one preset and protocol, over seeds, baselines beside.

What ``gsmflow bench`` runs, as a library call: a :class:`BenchRequest` in, a
:class:`BenchResult` out (its :meth:`BenchResult.to_dict` is the results
JSON). The library never prints; the command line renders the result.
"""

from __future__ import annotations

import importlib.metadata
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from gsmflow_nflows import __version__
from gsmflow_nflows.data import GZSLData, load_dataset
from gsmflow_nflows.errors import ConfigError
from gsmflow_nflows.evaluation.baselines import BASELINES, CALIBRATED_BASELINE, run_baselines
from gsmflow_nflows.evaluation.protocols import (
    PROTOCOLS,
    EvaluationLog,
    ProtocolResult,
    run_protocol,
)
from gsmflow_nflows.runtime import resolve_device
from gsmflow_nflows.training.config import GSMFlowConfig
from gsmflow_nflows.training.presets import imbalance_warning, run_config
from gsmflow_nflows.training.step import PRECISIONS
from gsmflow_nflows.training.trainer import ProgressFn

__all__ = [
    "METRICS",
    "BenchRequest",
    "BenchResult",
    "environment",
    "semantic_for",
    "request_config",
    "run_bench",
    "seeds_from",
]

METRICS = ("S", "U", "H", "T1")


@dataclass(frozen=True)
class BenchRequest:
    """What to run. ``seeds`` are explicit seed values; see :func:`seeds_from`.

    ``baselines`` also runs the simple baselines of
    :func:`gsmflow_nflows.evaluation.run_baselines` for every seed.
    """

    dataset: str
    data_root: str | None = None
    preset: str = "default"
    protocol: str = "final"
    seeds: tuple[int, ...] = (0,)
    device: str | None = None
    precision: str = "fp32"
    ablate: tuple[str, ...] = ()
    checkpoint_dir: str | None = None
    resume: bool = False
    calibrate: bool = False
    baselines: bool = True
    #: A whole config (``GSMFlowConfig.to_dict``) used instead of the preset: a replay.
    config: dict[str, Any] | None = None
    #: ``("section.field", value)`` pairs set after the preset (or ``config``) and ablations.
    overrides: tuple[tuple[str, Any], ...] = ()
    #: The command line that asked for the run, recorded in the results' ``environment``.
    command: tuple[str, ...] = ()
    #: Which ``<semantic>_splits.mat`` gives the class vectors; ``None``: see :func:`semantic_for`.
    semantic: str | None = None
    #: Iterations between checkpoints (with ``checkpoint_dir``).
    checkpoint_every: int = 1000
    #: Also checkpoint after this many seconds since the last checkpoint; ``None``: off.
    checkpoint_seconds: float | None = 300.0


def semantic_for(dataset: str, preset: str, given: str | None = None) -> str:
    """The class vectors a run uses: ``given`` if set; else CUB's ``paper`` preset takes the
    1,024-d sentence embeddings (``"sent"``), as the paper did, and everything else the
    attributes (``"att"``).

    Example:
        >>> semantic_for("cub", "paper"), semantic_for("cub", "default")
        ('sent', 'att')
        >>> semantic_for("cub", "paper", "att")
        'att'
    """
    if given:
        return given
    return "sent" if dataset.lower() == "cub" and preset == "paper" else "att"


def seeds_from(base: int, count: int) -> tuple[int, ...]:
    """``count`` seeds starting at ``base``: ``base, base + 1, ...``."""
    if not isinstance(count, int) or count < 1:
        raise ConfigError(f"count (of seeds) must be a positive integer, got {count!r}.")
    return tuple(base + offset for offset in range(count))


@dataclass(frozen=True)
class BenchResult:
    """What :func:`run_bench` returns. Accuracies are fractions in ``[0, 1]``.

    ``mean``/``std`` are over the seeds' ``runs`` for S, U, H and T1;
    ``calibrated`` (with calibrated stacking) the same for the calibrated S, U,
    H and the offset; ``baselines`` (unless switched off) is
    ``{"per_seed": [{"seed", name: scores}], "mean": {name: ...}, "std": {name: ...}}``
    for the names of :func:`gsmflow_nflows.evaluation.run_baselines`.

    Example:
        >>> result = run_bench(BenchRequest("digits"))  # doctest: +SKIP
        >>> round(result.mean["H"], 3), result.to_dict()["runs"][0]["seed"]  # doctest: +SKIP
    """

    dataset: str
    data: str
    protocol: str
    preset: str
    precision: str
    device: str
    seeds: list[int]
    mean: dict[str, float]
    std: dict[str, float]
    seconds: float
    ablate: list[str] = field(default_factory=list)
    split_sizes: dict[str, int] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    runs: list[ProtocolResult] = field(default_factory=list)
    calibrated: dict[str, dict[str, float]] | None = None
    baselines: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    #: :func:`environment`: versions, device and command line of the run.
    environment: dict[str, Any] = field(default_factory=dict)
    #: The class vectors used (``<semantic>_splits.mat``).
    semantic: str = "att"
    version: str = __version__

    def to_dict(self) -> dict[str, Any]:
        """The results JSON: every field, the runs as dicts, the version as ``gsmflow_nflows``."""
        values = {name: value for name, value in asdict(self).items() if name != "version"}
        return {"gsmflow_nflows": self.version, **values}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> BenchResult:
        """Read back what :meth:`to_dict` wrote (a results JSON); absent optional fields default."""
        values = dict(values)
        version = values.pop("gsmflow_nflows", __version__)
        runs = [ProtocolResult(**run) for run in values.pop("runs", [])]
        known = {f for f in cls.__dataclass_fields__ if f not in ("version", "runs")}
        unknown = set(values) - known
        if unknown:
            raise ConfigError(f"not a bench result: unknown field(s) {', '.join(sorted(unknown))}.")
        return cls(**values, runs=runs, version=version)


def run_bench(
    request: BenchRequest,
    *,
    progress: ProgressFn | None = None,
    progress_every: int = 10,
    on_evaluation: EvaluationLog | None = None,
) -> BenchResult:
    """Run GSMFlow on a dataset for every seed of ``request``, baselines beside, and summarise.

    Args:
        request: what to run.
        progress: ``progress(stage, done, total, losses)``; stage names are
            prefixed with the seed (``"seed 0 flow"``; ``"seed 0 val flow"`` on the
            validation split).
        progress_every: the trainers' ``progress_every`` (1: every iteration).
        on_evaluation: ``on_evaluation(seed, split, record)`` for every evaluation
            record as it is made (see :data:`~gsmflow_nflows.evaluation.protocols.EvaluationLog`).

    Returns:
        The :class:`BenchResult`.

    Example:
        >>> result = run_bench(BenchRequest("digits"))  # doctest: +SKIP
        >>> round(result.mean["H"], 3)  # doctest: +SKIP
    """
    _check_request(request)
    device = resolve_device(request.device)
    started = time.perf_counter()
    semantic = semantic_for(request.dataset, request.preset, request.semantic)
    load = _cached_loader(request, device, semantic)
    data = load("test")
    base_config = request_config(request, data)
    runs, baseline_runs = [], []
    for seed in request.seeds:
        runs.append(
            run_protocol(
                request.protocol,
                base_config.with_seed(seed),
                load,
                device=device,
                precision=request.precision,
                checkpoint_dir=Path(request.checkpoint_dir) if request.checkpoint_dir else None,
                checkpoint_every=request.checkpoint_every,
                checkpoint_seconds=request.checkpoint_seconds,
                resume=request.resume,
                progress=_seed_progress(progress, seed),
                calibrate=request.calibrate,
                progress_every=progress_every,
                on_evaluation=on_evaluation,
            )
        )
        if request.baselines:
            val_data = load("val") if request.calibrate else None
            scores = run_baselines(
                data, base_config.evaluation, seed=seed, device=device, val_data=val_data
            )
            baseline_runs.append(
                {"seed": seed, **{name: value.to_dict() for name, value in scores.items()}}
            )
    mean, std = _over_seeds([asdict(run) for run in runs], METRICS)
    return BenchResult(
        dataset=data.name,
        data=_describe_data(request),
        protocol=request.protocol,
        preset=request.preset,
        precision=request.precision,
        device=str(device),
        seeds=list(request.seeds),
        mean=mean,
        std=std,
        seconds=time.perf_counter() - started,
        ablate=list(request.ablate),
        split_sizes=_split_sizes(data),
        # the seed the (first) run used, not the preset's
        config=base_config.with_seed(request.seeds[0]).to_dict(),
        runs=runs,
        calibrated=_calibrated_summary(runs, mean, std) if request.calibrate else None,
        baselines=_baseline_summary(baseline_runs) if request.baselines else None,
        warnings=[w for w in [imbalance_warning(base_config, data)] if w],
        environment=environment(device, request.command),
        semantic=semantic,
    )


def request_config(request: BenchRequest, data: GZSLData) -> GSMFlowConfig:
    """The config ``request`` runs (before each seed is set): preset or replayed config,
    ablations, overrides (:func:`~gsmflow_nflows.training.presets.run_config`).

    Example:
        >>> request = BenchRequest("digits", overrides=(("training.lr", 1e-3),))
        >>> request_config(request, data).training.lr  # doctest: +SKIP
        0.001
    """
    return run_config(
        request.dataset,
        data,
        request.preset,
        request.ablate,
        base=request.config,
        overrides=dict(request.overrides),
    )


def environment(device: torch.device | str, command: tuple[str, ...] = ()) -> dict[str, Any]:
    """What a result was measured with: package versions, Python, the device, the command.

    Example:
        >>> environment("cpu", ("gsmflow", "bench"))["command"]
        ['gsmflow', 'bench']
    """
    device = torch.device(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
    return {
        "gsmflow_nflows": __version__,
        "torch": torch.__version__,
        "nflows": _version("nflows"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "device_name": name,
        "threads": torch.get_num_threads(),
        "command": list(command),
    }


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _check_request(request: BenchRequest) -> None:
    """One clean error for an impossible request, before any work."""
    if request.protocol not in PROTOCOLS:
        raise ConfigError(
            f"Unknown protocol {request.protocol!r}; choose from {', '.join(PROTOCOLS)}."
        )
    if request.precision not in PRECISIONS:
        raise ConfigError(
            f"Unknown precision {request.precision!r}; choose from {', '.join(PRECISIONS)}."
        )
    if request.calibrate and request.protocol != "final":
        raise ConfigError(
            f"calibrate=True needs protocol 'final', not {request.protocol!r} "
            "(its offset is chosen on the validation split); drop one of them."
        )


def _cached_loader(
    request: BenchRequest, device: torch.device, semantic: str
) -> Callable[[str], GZSLData]:
    """``split -> GZSLData``, each split loaded once and moved to ``device`` once."""
    cache: dict[str, GZSLData] = {}

    def load(split: str) -> GZSLData:
        if split not in cache:
            # On the run's device once; the trainer's and evaluations' .to(device) are then no-ops.
            cache[split] = load_dataset(
                request.dataset, data_root=request.data_root, split=split, semantic=semantic
            ).to(device)
        return cache[split]

    return load


def _seed_progress(progress: ProgressFn | None, seed: int) -> ProgressFn | None:
    """``progress`` with its stage names prefixed by the seed."""
    if progress is None:
        return None

    def seed_progress(stage: str, done: int, total: int, losses: dict[str, float]) -> None:
        progress(f"seed {seed} {stage}", done, total, losses)

    return seed_progress


def _describe_data(request: BenchRequest) -> str:
    """What the numbers were measured on, in words (real or generated)."""
    name = request.dataset.lower()
    if name == "synthetic":
        return "synthetic features generated by gsmflow_nflows (not a real benchmark)"
    if name == "digits":
        return "real handwritten digits (scikit-learn), seven-segment attributes, unseen 2/5/7"
    return f"xlsa17-format files from {request.data_root or 'the default data root'}"


def _split_sizes(data: GZSLData) -> dict[str, int]:
    return {
        "train": data.num_train,
        "test_seen": int(data.test_seen_labels.numel()),
        "test_unseen": int(data.test_unseen_labels.numel()),
        "seen_classes": data.num_seen,
        "unseen_classes": data.num_unseen,
    }


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return mean, std


def _over_seeds(
    per_seed: list[dict[str, Any]], metrics: tuple[str, ...]
) -> tuple[dict[str, float], dict[str, float]]:
    """Mean and std over the seeds' entries of each metric."""
    mean, std = {}, {}
    for metric in metrics:
        mean[metric], std[metric] = _mean_std([entry[metric] for entry in per_seed])
    return mean, std


def _calibrated_summary(
    runs: list[ProtocolResult], mean: dict[str, float], std: dict[str, float]
) -> dict[str, dict[str, float]]:
    """Mean/std of the calibrated S, U, H and offset; T1 does not depend on the offset."""
    calibrated = [run.calibrated for run in runs if run.calibrated is not None]
    cal_mean, cal_std = _over_seeds(calibrated, ("S", "U", "H", "offset"))
    return {"mean": {"T1": mean["T1"], **cal_mean}, "std": {"T1": std["T1"], **cal_std}}


def _baseline_summary(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """Every baseline's per-seed scores, and their mean and std over seeds (as GSMFlow's)."""
    mean: dict[str, Any] = {}
    std: dict[str, Any] = {}
    names = [*BASELINES, *([CALIBRATED_BASELINE] if CALIBRATED_BASELINE in per_seed[0] else [])]
    for name in names:
        mean[name], std[name] = _over_seeds([entry[name] for entry in per_seed], METRICS)
        if name == CALIBRATED_BASELINE:
            offsets = _over_seeds([entry[name] for entry in per_seed], ("offset",))
            mean[name]["offset"], std[name]["offset"] = offsets[0]["offset"], offsets[1]["offset"]
    return {"per_seed": per_seed, "mean": mean, "std": std}
