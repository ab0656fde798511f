"""Where one complete bench run spends its time, stage by stage, and the whole run projected.

Each stage of ``gsmflow bench`` is timed on this machine with the run's own
config and data, shortened where it repeats the same work (the relation
network's epochs, the mining loops, the flow's iterations), then projected to
the full schedule:

* ``load``: reading the dataset (``load_dataset``), once.
* ``relation``: the relation network, ``--relation-epochs`` epochs timed,
  x the config's ``relation_epochs`` / timed.
* ``mining``: boundary sample mining, 2 loops timed, x ``loops`` / 2.
* ``flow``: ``--iterations`` flow iterations timed (after the first 5), x the
  schedule's iterations; ``flow (frozen)`` the same up to where the schedule
  is predicted to freeze (``training.freeze_tolerance``, with the weights' RMS
  after the timed iterations; see ``gsmflow_nflows.training.frozen``).
* ``generation``, ``GZSL classifier``, ``ZSL classifier``: one evaluation at
  full size (every generated feature, every classifier step), x the
  protocol's evaluations (``final``: 1, ``paper``: the reference's points).
* ``baselines``: ESZSL, linear-Gaussian and seen-only, at full size, once.

Peak memory: the process's peak resident set during each stage (Linux: reset
through ``/proc/self/clear_refs`` before each stage), and the largest of them.

    python benchmarks/pipeline.py --make-apy-shaped ATT_SPLITS --data-root DIR  # write DIR/APY once
    python benchmarks/pipeline.py --dataset apy --data-root DIR --preset paper
    python benchmarks/pipeline.py --dataset digits --preset default --json out.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from gsmflow_nflows.data import GZSLData, load_dataset, make_synthetic_gzsl
from gsmflow_nflows.evaluation.baselines import run_baselines
from gsmflow_nflows.evaluation.gzsl import evaluate_gzsl, evaluate_zsl
from gsmflow_nflows.experiment import BenchRequest, request_config
from gsmflow_nflows.model import generate_features
from gsmflow_nflows.run_plan import plan_bench
from gsmflow_nflows.training import GSMFlowTrainer
from gsmflow_nflows.training.config import GSMFlowConfig
from gsmflow_nflows.training.frozen import predicted_freeze, weights_rms


@dataclasses.dataclass
class Stage:
    """One stage: what was timed and what the full run does."""

    name: str
    timed_units: float
    seconds: float
    full_units: float
    peak_mib: float | None

    @property
    def projected(self) -> float:
        return self.seconds / self.timed_units * self.full_units if self.timed_units else 0.0


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.make_apy_shaped:
        folder = Path(args.data_root) / "APY"
        # the README's aPY-shaped set: real attributes and splits, generated features
        make_synthetic_gzsl(
            folder,
            att_splits=args.make_apy_shaped,
            feature_dim=2048,
            noise_scale=4.6,
            unexplained_scale=0.35,
            seed=0,
        )
        log(f"wrote {folder}")
        return {}
    torch.set_num_threads(args.threads or torch.get_num_threads())
    request = BenchRequest(
        args.dataset,
        data_root=args.data_root,
        preset=args.preset,
        protocol=args.protocol,
        device="cpu",
        calibrate=False,
    )
    stages: list[Stage] = []
    data, seconds, peak = measured(lambda: load_dataset(args.dataset, data_root=args.data_root))
    stages.append(Stage("load", 1, seconds, 1, peak))
    config = request_config(request, data)
    val_data = load_dataset(args.dataset, data_root=args.data_root, split="val")
    plan = plan_bench(request, data, config, val_data=val_data)
    log(f"{data.name}: {data.num_train} x {data.feature_dim} trainval, preset {args.preset}, "
        f"protocol {args.protocol}; {plan.iterations_per_seed:,} flow iterations, "
        f"{plan.evaluations_per_seed} evaluation(s)")  # fmt: skip
    if config.mining.enabled:
        stages += mining_stages(config, data, args.relation_epochs)
    flow_stage, flow, rms = flow_iterations(config, data, args.iterations)
    stages.append(flow_stage)
    frozen = predicted_freeze(config.training, data.num_train, rms)
    total = config.training.iterations(data.num_train)
    stages.append(
        dataclasses.replace(
            flow_stage, name="flow (frozen)", full_units=frozen if frozen is not None else total
        )
    )
    evaluations = plan.evaluations_per_seed
    stages += evaluation_stages(config, data, flow, evaluations)
    _, seconds, peak = measured(lambda: run_baselines(data, config.evaluation, seed=0))
    stages.append(Stage("baselines", 1, seconds, 1, peak))
    report = summary(stages, args, data, frozen, total)
    print(table(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        log(f"wrote {args.json}")
    return report


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="apy")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--protocol", default="final", choices=["final", "paper"])
    parser.add_argument(
        "--iterations", type=int, default=100, help="flow iterations timed (at least 3)"
    )
    parser.add_argument("--relation-epochs", type=int, default=2, help="relation epochs timed")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", default=None, help="also write the report here")
    parser.add_argument(
        "--make-apy-shaped",
        metavar="ATT_SPLITS",
        default=None,
        help="write DATA_ROOT/APY from a real APY att_splits.mat with generated 2048-d "
        "features (the README's aPY-shaped set) and stop",
    )
    args = parser.parse_args(argv)
    if args.make_apy_shaped and not args.data_root:
        parser.error("--make-apy-shaped needs --data-root")
    return args


def measured(work: Callable[[], Any]) -> tuple[Any, float, float | None]:
    """``(result, seconds, peak resident MiB during the call)``."""
    reset_peak()
    started = time.perf_counter()
    result = work()
    return result, time.perf_counter() - started, peak_mib()


def mining_stages(config: GSMFlowConfig, data: GZSLData, relation_epochs: int) -> list[Stage]:
    """The relation network and the mining, shortened, timed apart through the progress calls."""
    mining = config.mining
    epochs = min(relation_epochs, mining.relation_epochs)
    loops = min(2, mining.loops)
    short = dataclasses.replace(
        config, mining=dataclasses.replace(mining, relation_epochs=epochs, loops=loops)
    )
    marks: dict[str, float] = {}

    def progress(stage: str, done: int, total: int, losses: dict[str, float]) -> None:
        marks[stage] = time.perf_counter()

    trainer = GSMFlowTrainer(short, data, device="cpu")
    reset_peak()
    started = time.perf_counter()
    trainer.mine(progress)
    peak = peak_mib()
    relation_end = marks["relation"]
    return [
        Stage("relation", epochs, relation_end - started, mining.relation_epochs, peak),
        Stage("mining", loops, marks["mining"] - relation_end, mining.loops, peak),
    ]


def flow_iterations(
    config: GSMFlowConfig, data: GZSLData, iterations: int
) -> tuple[Stage, Any, float]:
    """Time ``iterations`` flow iterations after 5 untimed ones (mining off: the step costs
    the same), with the trainer's own timer on a throwaway run."""
    total = config.training.iterations(data.num_train)
    plain = dataclasses.replace(config, mining=dataclasses.replace(config.mining, enabled=False))
    trainer = GSMFlowTrainer(plain, data, device="cpu")
    reset_peak()
    per_iteration, flow = trainer.time_iterations(math.inf, warmup=5, most=iterations)
    stage = Stage("flow", iterations, per_iteration * iterations, total, peak_mib())
    return stage, flow, weights_rms(list(flow.parameters()))


def evaluation_stages(
    config: GSMFlowConfig, data: GZSLData, flow: Any, evaluations: int
) -> list[Stage]:
    """One full-size evaluation, its three parts timed apart."""
    evaluation = config.evaluation
    generator = torch.Generator().manual_seed(0)
    (features, labels), seconds, peak = measured(
        lambda: generate_features(
            flow, data.unseen_embeddings, evaluation.generated_per_class(), generator=generator
        )
    )
    stages = [Stage("generation", 1, seconds, evaluations, peak)]
    settings = {**evaluation.classifier_settings(), "last_epoch_only": True}
    _, seconds, peak = measured(
        lambda: evaluate_gzsl(
            seen_features=data.train_features,
            seen_labels=data.train_labels,
            generated_features=features,
            generated_labels=labels,
            test_seen_features=data.test_seen_features,
            test_seen_labels=data.test_seen_labels,
            test_unseen_features=data.test_unseen_features,
            test_unseen_labels=data.test_unseen_labels,
            num_seen=data.num_seen,
            num_unseen=data.num_unseen,
            generator=torch.Generator().manual_seed(1),
            generated_weight=evaluation.generated_weight(),
            **settings,
        )
    )
    stages.append(Stage("GZSL classifier", 1, seconds, evaluations, peak))
    _, seconds, peak = measured(
        lambda: evaluate_zsl(
            generated_features=features,
            generated_labels=labels,
            test_unseen_features=data.test_unseen_features,
            test_unseen_labels=data.test_unseen_labels,
            num_unseen=data.num_unseen,
            generator=torch.Generator().manual_seed(2),
            **settings,
        )
    )
    stages.append(Stage("ZSL classifier", 1, seconds, evaluations, peak))
    return stages


def summary(
    stages: list[Stage], args: argparse.Namespace, data: GZSLData, frozen: int | None, total: int
) -> dict[str, Any]:
    full = [s for s in stages if s.name != "flow (frozen)"]
    shortcut = [s for s in stages if s.name != "flow"]
    full_seconds = sum(s.projected for s in full)
    peaks = [s.peak_mib for s in stages if s.peak_mib is not None]
    return {
        "dataset": data.name,
        "shape": [data.num_train, data.feature_dim],
        "preset": args.preset,
        "protocol": args.protocol,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "flow_iterations": total,
        "frozen_at": frozen,
        "stages": [
            {
                "stage": s.name,
                "timed_units": s.timed_units,
                "timed_seconds": s.seconds,
                "full_units": s.full_units,
                "projected_seconds": s.projected,
                "share": s.projected / full_seconds if s.name != "flow (frozen)" else None,
                "peak_mib": s.peak_mib,
            }
            for s in stages
        ],
        "projected_seconds": full_seconds,
        "projected_seconds_frozen": sum(s.projected for s in shortcut),
        "peak_mib": max(peaks) if peaks else None,
    }


def table(report: dict[str, Any]) -> str:
    lines = [
        f"{report['dataset']} {report['shape'][0]} x {report['shape'][1]}, preset "
        f"{report['preset']}, protocol {report['protocol']}, {report['threads']} threads, "
        f"torch {report['torch']}",
        "| stage | timed | seconds | full run | projected | share | peak RSS |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in report["stages"]:
        share = "" if s["share"] is None else f"{100 * s['share']:.1f}%"
        peak = "" if s["peak_mib"] is None else f"{s['peak_mib']:,.0f} MiB"
        lines.append(
            f"| {s['stage']} | {s['timed_units']:,.0f} | {s['timed_seconds']:.1f} | "
            f"{s['full_units']:,.0f} | {minutes(s['projected_seconds'])} | {share} | {peak} |"
        )
    frozen = report["frozen_at"]
    peak = "" if report["peak_mib"] is None else f"; peak RSS {report['peak_mib']:,.0f} MiB"
    lines.append(
        f"projected run: {minutes(report['projected_seconds'])}; stopping once frozen "
        f"(iteration {frozen if frozen is not None else 'never'} of "
        f"{report['flow_iterations']:,}): {minutes(report['projected_seconds_frozen'])}{peak}"
    )
    return "\n".join(lines)


def minutes(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def reset_peak() -> None:
    """Reset the process's peak resident set (Linux); elsewhere a no-op."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_mib() -> float | None:
    """The process's peak resident set since the last reset, in MiB (Linux), else ``None``."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
