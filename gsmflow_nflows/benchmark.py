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

import torch

from gsmflow_nflows import __version__
from gsmflow_nflows.data import GZSLData, load_dataset
from gsmflow_nflows.evaluation import per_class_accuracy, predict, train_softmax_classifier
from gsmflow_nflows.evaluation.protocols import PROTOCOLS, run_protocol
from gsmflow_nflows.training.config import GSMFlowConfig
from gsmflow_nflows.training.presets import preset_config
from gsmflow_nflows.training.trainer import ProgressFn, resolve_device, seeded_generator

METRICS = ("S", "U", "H", "T1")


@dataclass(frozen=True)
class BenchRequest:
    """What to run. ``seeds`` are explicit seed values; see :func:`seeds_from`."""

    dataset: str
    data_root: str | None = None
    preset: str = "quick"
    protocol: str = "final"
    seeds: tuple[int, ...] = (0,)
    device: str | None = None
    precision: str = "fp32"
    ablate: tuple[str, ...] = ()
    checkpoint_dir: str | None = None
    resume: bool = False


def seeds_from(base: int, count: int) -> tuple[int, ...]:
    """``count`` seeds starting at ``base``: ``base, base + 1, ...``."""
    if not isinstance(count, int) or count < 1:
        raise ValueError(f"--seeds must be a positive integer, got {count!r}.")
    return tuple(base + offset for offset in range(count))


def bench_config(request: BenchRequest, data: GZSLData) -> GSMFlowConfig:
    """The config a request runs with (preset, then ablations), before seeding."""
    return preset_config(request.dataset, data, request.preset).ablate(list(request.ablate))


def imbalance_warning(config: GSMFlowConfig, data: GZSLData) -> str | None:
    """A warning when generated unseen features outnumber real seen ones by far (spec pitfall)."""
    generated = config.evaluation.samples_per_class * data.num_unseen
    ratio = generated / data.num_train
    if ratio > 10 or ratio < 0.1:
        return (
            f"the classifier sees {generated} generated unseen features against {data.num_train} "
            f"real seen ones ({ratio:.1f}x); accuracy on one side may collapse"
        )
    return None


def seen_only_baseline(data: GZSLData, config: GSMFlowConfig, device: torch.device) -> dict:
    """The floor GSMFlow must lift: a softmax classifier trained on real seen features only.

    It has no unseen outputs, so every unseen test image is misclassified: U = 0
    and H = 0 exactly; S is its per-class accuracy on the seen test images.
    Chance level (uniform guess over S+U classes) is ``1/(S+U)`` for S, U and H.
    """
    evaluation = config.evaluation
    classifier = train_softmax_classifier(
        data.train_features.to(device),
        data.train_labels.to(device),
        data.num_seen,
        **evaluation.classifier_settings(),
        generator=seeded_generator(config.seed, 8),
    )
    seen = per_class_accuracy(
        predict(classifier, data.test_seen_features.to(device)), data.test_seen_labels.to(device)
    )
    chance = 1.0 / (data.num_seen + data.num_unseen)
    return {
        "seen_only": {"S": seen, "U": 0.0, "H": 0.0},
        "chance": {"S": chance, "U": chance, "H": chance},
    }


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
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
        ``baselines``, ``warnings``, ``seconds``, ``device``.

    Example:
        >>> result = run_bench(BenchRequest("synthetic", preset="quick"))  # doctest: +SKIP
        >>> round(result["mean"]["H"], 3)  # doctest: +SKIP
    """
    if request.protocol not in PROTOCOLS:
        raise ValueError(
            f"Unknown protocol {request.protocol!r}; choose from {', '.join(PROTOCOLS)}."
        )
    if request.precision not in ("fp32", "bf16"):
        raise ValueError(f"Unknown precision {request.precision!r}; choose fp32 or bf16.")
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
            ).to_dict()
        )
    mean, std = {}, {}
    for metric in METRICS:
        mean[metric], std[metric] = _mean_std([run[metric] for run in runs])
    name = request.dataset.lower()
    return {
        "gsmflow_nflows": __version__,
        "dataset": data.name,
        "data": (
            "synthetic features generated by gsmflow_nflows (not a real benchmark)"
            if name == "synthetic"
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
        "baselines": seen_only_baseline(data, base_config, device),
        "warnings": warnings,
        "seconds": time.perf_counter() - started,
    }


def format_table(result: dict[str, Any]) -> str:
    """A plain-text table of a :func:`run_bench` result (accuracies in %)."""
    header = f"{'dataset':<12}{'protocol':<10}{'seeds':>6}"
    header += "".join(f"{m:>16}" for m in METRICS) + f"{'wall time':>12}"
    row = f"{result['dataset']:<12}{result['protocol']:<10}{len(result['seeds']):>6}"
    for metric in METRICS:
        cell = f"{100 * result['mean'][metric]:.1f} ± {100 * result['std'][metric]:.1f}"
        row += f"{cell:>16}"
    seconds = result["seconds"]
    row += f"{_duration(seconds):>12}"
    baseline = result["baselines"]["seen_only"]
    lines = [
        header,
        row,
        "",
        f"data: {result['data']}; preset {result['preset']}, precision {result['precision']}, "
        f"device {result['device']}"
        + (f", ablated: {', '.join(result['ablate'])}" if result["ablate"] else ""),
        f"baseline, classifier on real seen features only: S {100 * baseline['S']:.1f}, "
        f"U {100 * baseline['U']:.1f}, H {100 * baseline['H']:.1f}; "
        f"chance {100 * result['baselines']['chance']['H']:.1f}",
    ]
    if result["protocol"] == "paper":
        lines.append("protocol 'paper' picks the best epoch ON THE TEST SET, as the authors did.")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes}m{rest:02d}s" if minutes else f"{rest}s"
