"""``gsmflow bench`` as a library call: dataset + preset + protocol + seeds -> results.

The library never prints; the CLI renders what :func:`run_bench` returns.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gsmflow_nflows import __version__
from gsmflow_nflows.data import GZSLData, load_dataset
from gsmflow_nflows.errors import ConfigError
from gsmflow_nflows.evaluation.baselines import BASELINES, run_baselines
from gsmflow_nflows.evaluation.protocols import PROTOCOLS, run_protocol
from gsmflow_nflows.training.config import GSMFlowConfig
from gsmflow_nflows.training.presets import preset_config
from gsmflow_nflows.training.trainer import ProgressFn, resolve_device

METRICS = ("S", "U", "H", "T1")

#: How :func:`format_table` names each baseline of :func:`run_baselines`.
BASELINE_NAMES = {
    "eszsl": "ESZSL (gamma=lambda=1)",
    "linear_gaussian": "linear-Gaussian + softmax",
    "seen_only": "seen-only softmax",
    "chance": "chance",
}


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


def seeds_from(base: int, count: int) -> tuple[int, ...]:
    """``count`` seeds starting at ``base``: ``base, base + 1, ...``."""
    if not isinstance(count, int) or count < 1:
        raise ConfigError(f"count (of seeds) must be a positive integer, got {count!r}.")
    return tuple(base + offset for offset in range(count))


def bench_config(request: BenchRequest, data: GZSLData) -> GSMFlowConfig:
    """The config a request runs with (preset, then ablations), before seeding."""
    return preset_config(request.dataset, data, request.preset).ablate(list(request.ablate))


def imbalance_warning(config: GSMFlowConfig, data: GZSLData) -> str | None:
    """A warning when generated unseen features outnumber real seen ones by far (or the reverse).

    The softmax classifier is trained on both; a 10-to-1 imbalance pushes its
    predictions to one side, so that S or U collapses.
    """
    generated = config.evaluation.samples_per_class * data.num_unseen
    ratio = generated / data.num_train
    if ratio > 10 or ratio < 0.1:
        return (
            f"the classifier sees {generated} generated unseen features against {data.num_train} "
            f"real seen ones ({ratio:.1f}x); accuracy on one side may collapse"
        )
    return None


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return mean, std


def _summarise(per_seed: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Mean and std over seeds of S, U, H, T1 of every baseline (as GSMFlow's)."""
    mean: dict[str, Any] = {}
    std: dict[str, Any] = {}
    for name in BASELINES:
        mean[name], std[name] = {}, {}
        for metric in METRICS:
            mean[name][metric], std[name][metric] = _mean_std(
                [entry[name][metric] for entry in per_seed]
            )
    return mean, std


def run_bench(request: BenchRequest, *, progress: ProgressFn | None = None) -> dict[str, Any]:
    """Run GSMFlow on a dataset for every seed and summarise.

    Args:
        request: what to run.
        progress: ``progress(stage, done, total, losses)``; stage names are
            prefixed with the seed (``"seed 0 flow"``).

    Returns:
        A JSON-ready dict: ``dataset``, ``data`` (what was run on, real or
        generated), ``protocol``, ``preset``, ``config``, ``seeds``, ``runs``
        (per-seed results), ``mean``/``std`` of S, U, H, T1 (fractions),
        ``baselines`` (``None`` when ``request.baselines`` is off, else
        ``{"per_seed": [{"seed", "eszsl": {S, U, H, T1, seconds}, ...}],
        "mean": {name: {...}}, "std": {name: {...}}}``; see
        :func:`gsmflow_nflows.evaluation.run_baselines`), ``warnings``,
        ``seconds``, ``device``.

    Example:
        >>> result = run_bench(BenchRequest("digits"))  # doctest: +SKIP
        >>> round(result["mean"]["H"], 3)  # doctest: +SKIP
    """
    if request.protocol not in PROTOCOLS:
        raise ConfigError(
            f"Unknown protocol {request.protocol!r}; choose from {', '.join(PROTOCOLS)}."
        )
    if request.precision not in ("fp32", "bf16"):
        raise ConfigError(f"Unknown precision {request.precision!r}; choose fp32 or bf16.")
    if request.calibrate and request.protocol != "final":
        raise ConfigError(
            f"calibrate=True needs protocol 'final', not {request.protocol!r} "
            "(its offset is chosen on the validation split); drop one of them."
        )
    device = resolve_device(request.device)
    started = time.perf_counter()
    cache: dict[str, GZSLData] = {}

    def load(split: str) -> GZSLData:
        if split not in cache:
            # On the run's device once; the trainer's and evaluations' .to(device) are then no-ops.
            cache[split] = load_dataset(
                request.dataset, data_root=request.data_root, split=split
            ).to(device)
        return cache[split]

    data = load("test")
    base_config = bench_config(request, data)
    warnings = [w for w in [imbalance_warning(base_config, data)] if w]
    runs = []
    baseline_runs = []
    for seed in request.seeds:
        config = base_config.with_seed(seed)
        seed_progress = None
        if progress is not None:

            def seed_progress(stage, done, total, losses, seed=seed):
                progress(f"seed {seed} {stage}", done, total, losses)

        checkpoint_dir = None
        if request.checkpoint_dir is not None:
            checkpoint_dir = Path(request.checkpoint_dir)
        runs.append(
            run_protocol(
                request.protocol,
                config,
                load,
                device=device,
                precision=request.precision,
                checkpoint_dir=checkpoint_dir,
                resume=request.resume,
                progress=seed_progress,
                calibrate=request.calibrate,
            ).to_dict()
        )
        if request.baselines:
            scores = run_baselines(data, base_config.evaluation, seed=seed, device=device)
            baseline_runs.append(
                {"seed": seed, **{name: value.to_dict() for name, value in scores.items()}}
            )
    baselines = None
    if request.baselines:
        baseline_mean, baseline_std = _summarise(baseline_runs)
        baselines = {"per_seed": baseline_runs, "mean": baseline_mean, "std": baseline_std}
    mean, std = {}, {}
    for metric in METRICS:
        mean[metric], std[metric] = _mean_std([run[metric] for run in runs])
    calibrated = None
    if request.calibrate:  # T1 does not depend on the seen-score offset
        calibrated = {"mean": {"T1": mean["T1"]}, "std": {"T1": std["T1"]}}
        for metric in ("S", "U", "H", "offset"):
            values = [run["calibrated"][metric] for run in runs]
            calibrated["mean"][metric], calibrated["std"][metric] = _mean_std(values)
    name = request.dataset.lower()
    return {
        "gsmflow_nflows": __version__,
        "dataset": data.name,
        "data": (
            "synthetic features generated by gsmflow_nflows (not a real benchmark)"
            if name == "synthetic"
            else "real handwritten digits (scikit-learn), seven-segment attributes, unseen 2/5/7"
            if name == "digits"
            else f"xlsa17-format files from {request.data_root or 'the default data root'}"
        ),
        "split_sizes": {
            "train": data.num_train,
            "test_seen": int(data.test_seen_labels.numel()),
            "test_unseen": int(data.test_unseen_labels.numel()),
            "seen_classes": data.num_seen,
            "unseen_classes": data.num_unseen,
        },
        "protocol": request.protocol,
        "preset": request.preset,
        "ablate": list(request.ablate),
        "precision": request.precision,
        "device": str(device),
        "seeds": list(request.seeds),
        "config": base_config.to_dict(),
        "runs": runs,
        "mean": mean,
        "std": std,
        "calibrated": calibrated,
        "baselines": baselines,
        "warnings": warnings,
        "seconds": time.perf_counter() - started,
    }


def format_table(result: dict[str, Any]) -> str:
    """A plain-text table of a :func:`run_bench` result (accuracies in %).

    One row for GSMFlow, then one per baseline (when the result has them), and a
    line comparing GSMFlow's mean H with the best of ESZSL and linear-Gaussian.
    """
    header = f"{'dataset':<12}{'protocol':<10}{'seeds':>6}"
    header += "".join(f"{m:>16}" for m in METRICS) + f"{'wall time':>12}"
    row = f"{result['dataset']:<12}{result['protocol']:<10}{len(result['seeds']):>6}"
    row += _cells(result["mean"], result["std"], result["seconds"])
    lines = [header, row]
    calibrated = result.get("calibrated")
    if calibrated is not None:
        label = f"+ calibrated, gamma {calibrated['mean']['offset']:.2f}"
        gap = max(28 - len(label) - len(str(len(result["seeds"]))), 1)
        cells = _cells(calibrated["mean"], calibrated["std"], float("nan"))
        lines.append(f"{label}{' ' * gap}{len(result['seeds'])}{cells}")
    baselines = result.get("baselines")
    if baselines is not None:
        seeds = len(baselines["per_seed"])
        for name, label in BASELINE_NAMES.items():
            seconds = sum(entry[name]["seconds"] for entry in baselines["per_seed"])
            cells = _cells(baselines["mean"][name], baselines["std"][name], seconds)
            # the name fills the dataset and protocol columns; the seed count stays right-aligned
            gap = max(28 - len(label) - len(str(seeds)), 1)
            lines.append(f"{label}{' ' * gap}{seeds}{cells}")
    lines += [
        "",
        f"data: {result['data']}; preset {result['preset']}, precision {result['precision']}, "
        f"device {result['device']}"
        + (f", ablated: {', '.join(result['ablate'])}" if result["ablate"] else ""),
    ]
    if baselines is not None:
        lines.append(_verdict(result["mean"]["H"], baselines["mean"]))
    if calibrated is not None:
        lines.append(
            "calibrated stacking (Chao et al. 2016): the seen-score offset gamma chosen on the "
            "validation split; the baselines are not calibrated."
        )
    if result["protocol"] == "paper":
        lines.append("protocol 'paper' picks the best epoch ON THE TEST SET, as the authors did.")
    return "\n".join(lines)


def _cells(mean: dict[str, float], std: dict[str, float], seconds: float) -> str:
    cells = "".join(f"{f'{100 * mean[m]:.1f} ± {100 * std[m]:.1f}':>16}" for m in METRICS)
    return cells + f"{_duration(seconds):>12}"


def _verdict(gsmflow_h: float, baseline_means: dict[str, dict[str, float]]) -> str:
    """``GSMFlow H 61.2 vs best baseline 55.0 (ESZSL): +6.2; GSMFlow beats ESZSL (55.0), ...``."""
    rivals = {
        "ESZSL": baseline_means["eszsl"]["H"],
        "linear-Gaussian": baseline_means["linear_gaussian"]["H"],
    }
    best_name = max(rivals, key=rivals.__getitem__)
    ours, best = round(100 * gsmflow_h, 1), round(100 * rivals[best_name], 1)

    def outcome(h: float) -> str:
        return "beats" if gsmflow_h > h else "ties with" if gsmflow_h == h else "loses to"

    each = ", ".join(f"{outcome(h)} {name} ({100 * h:.1f})" for name, h in rivals.items())
    return (
        f"GSMFlow H {ours:.1f} vs best baseline {best:.1f} ({best_name}): "
        f"{ours - best:+.1f}; GSMFlow {each}"
    )


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "-"
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes}m{rest:02d}s" if minutes else f"{rest}s"
