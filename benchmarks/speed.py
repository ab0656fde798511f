"""Speed benchmark: our GSMFlow (nflows) against the authors' model in FrEIA.

Runs, in ONE process, on identical synthetic aPY-shaped data and (where the
structures correspond) identical weights:

* ``reference``: the authors' model written with FrEIA ``GLOWCouplingBlock``
  (``benchmarks/freia_reference.py``) and the authors' training step;
* ``ours-fp32``: ``gsmflow_nflows.build_gsmflow`` with our training step, eager;
* ``ours-bf16``: the same under ``torch.autocast(device_type, torch.bfloat16)``;
* ``ours-*-compile`` (``--compile``): the same with ``torch.compile``.

For each: training-step time (median and IQR over ``--steps`` steps after
``--warmup`` steps; a full step: perturbation, NLL, backward, prototype loss,
Adam), sampling throughput (features/s at ``--samples-per-class`` features per
class, in batches of ``--sample-batch``), peak memory, FLOPs counted with
``torch.utils.flop_counter.FlopCounterMode`` and the achieved GFLOP/s against
a square-matmul peak measured in the same run, and the ratios to the reference.

Examples:
    PYTHONPATH=. python benchmarks/speed.py                # aPY size, table on stdout
    PYTHONPATH=. python benchmarks/speed.py --json         # JSON on stdout, table on stderr
    PYTHONPATH=. python benchmarks/speed.py --quick        # tiny smoke run (seconds)
    PYTHONPATH=. python benchmarks/speed.py --compile --json results.json

See ``benchmarks/README.md`` for what each column means.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

try:
    from benchmarks.freia_reference import (
        ReferenceGSMFlow,
        choose_anchor_indices,
        map_weights,
        reference_generate,
        reference_nll,
        reference_train_step,
    )
except ImportError as error:  # FrEIA is in the `bench` extra only
    raise SystemExit(
        f"benchmarks/speed.py needs FrEIA for the reference model ({error}); "
        "install the bench extra: pip install -e '.[bench]'"
    ) from error

from gsmflow_nflows import build_gsmflow, generate_features
from gsmflow_nflows.losses import PrototypeLoss, VisualPerturbation
from gsmflow_nflows.training.step import train_step

#: aPY, as published (docs/gsmflow-spec.md).
APY = {
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

#: A tiny size for smoke runs (``--quick``).
QUICK = {
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


# --------------------------------------------------------------------------- data


@dataclasses.dataclass
class SyntheticData:
    """aPY-shaped synthetic GZSL data (the real files are not needed for speed).

    Attributes:
        class_embeddings: ``[C, A]`` L2-normalised class vectors, all classes.
        seen: ``[S]`` indices of the seen classes; ``unseen``: ``[U]``.
        features: ``[N, D]`` training features of seen classes, in ``[0, 1]``
            like the reference's MinMax-scaled ResNet features.
        labels: ``[N]`` class index (into all classes) of each feature.
        seen_class_means: ``[S, D]`` mean training feature per seen class.
    """

    class_embeddings: Tensor
    seen: Tensor
    unseen: Tensor
    features: Tensor
    labels: Tensor
    seen_class_means: Tensor


def make_data(sizes: dict[str, Any], generator: torch.Generator, device: torch.device):
    num_classes, num_seen = sizes["classes"], sizes["seen"]
    embeddings = torch.rand(num_classes, sizes["attributes"], generator=generator)
    embeddings = nn.functional.normalize(embeddings, dim=1)
    order = torch.randperm(num_classes, generator=generator)
    seen, unseen = order[:num_seen].sort().values, order[num_seen:].sort().values
    prototypes = torch.rand(num_seen, sizes["features"], generator=generator)
    which = torch.randint(num_seen, (sizes["train_size"],), generator=generator)
    noise = 0.1 * torch.randn(sizes["train_size"], sizes["features"], generator=generator)
    features = (prototypes[which] + noise).clamp(0, 1)
    means = torch.stack([features[which == k].mean(0) for k in range(num_seen)])
    return SyntheticData(
        class_embeddings=embeddings.to(device),
        seen=seen.to(device),
        unseen=unseen.to(device),
        features=features.to(device),
        labels=seen[which].to(device),
        seen_class_means=means.to(device),
    )


# --------------------------------------------------------------------- agreement


def check_agreement(
    flow: nn.Module, reference: ReferenceGSMFlow, data: SyntheticData, batch: Tensor
) -> dict[str, Any]:
    """NLL, z and log-det of both models on the same batch (fp32, no perturbation)."""
    x, a = data.features[batch], data.class_embeddings[data.labels[batch]]
    with torch.no_grad():
        z_ours, logdet_ours = flow._transform(x, context=flow._embedding_net(a))
        z_ref, logdet_ref = reference(x, a)
        nll_ours, nll_ref = reference_nll(z_ours, logdet_ours), reference_nll(z_ref, logdet_ref)
    result = {
        "nll_ours": nll_ours.item(),
        "nll_reference": nll_ref.item(),
        "nll_abs_diff": (nll_ours - nll_ref).abs().item(),
        "z_max_abs_diff": (z_ours - z_ref).abs().max().item(),
        "logdet_max_abs_diff": (logdet_ours - logdet_ref).abs().max().item(),
        "logdet_max_abs": logdet_ref.abs().max().item(),
    }
    # fp32 tolerances: NLL relative 1e-5; z (order 1) 1e-4; log-det (a sum over
    # D terms) 1e-6 * D. The float64 proof at 1e-5 is tests/benchmarks/.
    result["ok"] = (
        result["nll_abs_diff"] <= 1e-5 * max(1.0, abs(result["nll_reference"]))
        and result["z_max_abs_diff"] <= 1e-4
        and result["logdet_max_abs_diff"] <= 1e-6 * x.shape[1]
    )
    return result


# ---------------------------------------------------------------- training steps


def make_our_step(flow, optimizer, data, settings, precision) -> Callable[[Tensor], Any]:
    """Our step on one batch: the package's ``train_step`` (``precision`` passed to it)."""
    seen_a = data.class_embeddings[data.seen]
    perturbation = VisualPerturbation(settings["perturbation"])
    prototype = PrototypeLoss(settings["prototype_weight"])

    def step(batch: Tensor):
        return train_step(
            flow,
            optimizer,
            data.features[batch],
            data.class_embeddings[data.labels[batch]],
            seen_embeddings=seen_a,
            seen_means=data.seen_class_means,
            perturbation=perturbation,
            prototype=prototype,
            precision=precision,
        )

    return step


# -------------------------------------------------------------------- measuring


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def summarize(times: list[float]) -> dict[str, float]:
    q1, median, q3 = statistics.quantiles(times, n=4, method="inclusive")
    return {
        "median_s": median,
        "q1_s": q1,
        "q3_s": q3,
        "iqr_s": q3 - q1,
        "min_s": min(times),
        "n": len(times),
    }


def time_calls(fn: Callable[[int], Any], count: int, device: torch.device) -> list[float]:
    times = []
    for i in range(count):
        synchronize(device)
        start = time.perf_counter()
        fn(i)
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def flops_and_peak_memory(fn: Callable[[], Any], device: torch.device) -> tuple[int, dict]:
    """FLOPs of ``fn`` and the peak of the tensor memory it allocates above what was live.

    FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` (matmuls, convolutions
    and the other ops it has formulas for; elementwise ops count zero).

    Memory on CUDA: ``torch.cuda.max_memory_allocated`` minus the allocation
    before. On CPU: replay of the allocation/free events that ``torch.profiler``
    records with ``profile_memory=True`` (every tensor allocation through
    PyTorch's CPU allocator, in time order), taking the maximum of the running
    sum. That is exact for tensors and independent of what ran earlier in the
    process, unlike ``ru_maxrss`` (a process-lifetime high-water mark that only
    moves when a new record is set, so it cannot separate variants run in one
    process). Python objects and allocator caching are not included.
    """
    counter = FlopCounterMode(display=False)
    if device.type == "cuda":
        synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        with counter:
            fn()
        synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - before
        return counter.get_total_flops(), {
            "bytes": peak,
            "method": "torch.cuda.max_memory_allocated",
        }
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof, counter:
        fn()
    try:
        events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
        events.sort(key=lambda e: e.start_ns())
        live = peak = 0
        for event in events:
            live += event.nbytes()
            peak = max(peak, live)
    except AttributeError:  # private profiler API changed
        return counter.get_total_flops(), {
            "bytes": None,
            "method": "unavailable (torch.profiler memory events)",
        }
    return counter.get_total_flops(), {
        "bytes": peak,
        "method": "torch.profiler memory events (tensor allocations)",
    }


def state_bytes(model: nn.Module, optimizer: torch.optim.Optimizer | None) -> int:
    """Parameters + optimizer state, the memory a step holds before it starts."""
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    if optimizer is not None:
        for state in optimizer.state.values():
            total += sum(v.numel() * v.element_size() for v in state.values() if torch.is_tensor(v))
    return total


def matmul_peak(size: int, dtype: torch.dtype, device: torch.device, repeats: int) -> float:
    """Best GFLOP/s of a ``size x size`` square matmul over ``repeats`` runs."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    a @ b
    times = time_calls(lambda _: a @ b, repeats, device)
    return 2 * size**3 / min(times) / 1e9


def profile_top_ops(fn: Callable[[], Any], rows: int) -> str:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def autocast_context(precision: str, device: torch.device):
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ------------------------------------------------------------------ the variants


@dataclasses.dataclass
class Variant:
    name: str
    kind: str  # "reference" or "ours"
    precision: str = "fp32"
    compile: bool = False
    fused_adam: bool = True  # ours: as the trainer builds Adam; the reference: never


@dataclasses.dataclass
class Runner:
    """One variant, ready to run: ``step(i)`` trains on batch ``i``, ``sample(a, n)`` generates."""

    variant: Variant
    model: nn.Module
    optimizer: torch.optim.Optimizer
    step: Callable[[int], Any]
    sample: Callable[[Tensor, int], Any]
    step_times: list[float] = dataclasses.field(default_factory=list)
    sample_times: list[float] = dataclasses.field(default_factory=list)
    sample_count: int = 0
    result: dict[str, Any] = dataclasses.field(default_factory=dict)


def make_runner(variant, reference0, flow0, data, sizes, args, batches, device) -> Runner:
    """A fresh copy of the initial weights, a fresh Adam, and the variant's step and sampler."""
    seen_a = data.class_embeddings[data.seen]
    adam = {"lr": sizes["lr"], "weight_decay": sizes["weight_decay"]}
    if variant.kind == "reference":
        model = copy.deepcopy(reference0)
        optimizer = torch.optim.Adam(model.parameters(), **adam)

        def raw_step(batch):
            return reference_train_step(
                model,
                optimizer,
                data.features[batch],
                data.class_embeddings[data.labels[batch]],
                seen_a,
                data.seen_class_means,
                perturbation=sizes["perturbation"],
                prototype_weight=sizes["prototype_weight"],
            )

        def raw_sample(classes, n):
            return reference_generate(model, classes, n, batch_size=args.sample_batch)

    else:
        model = copy.deepcopy(flow0)
        # as gsmflow_nflows.training.trainer builds it (fused Adam) unless --plain-adam
        optimizer = torch.optim.Adam(model.parameters(), fused=variant.fused_adam, **adam)
        raw_step = make_our_step(model, optimizer, data, sizes, variant.precision)

        def raw_sample(classes, n):
            return generate_features(model, classes, n, batch_size=args.sample_batch)

    if variant.compile:  # the flow's model code; the step's glue (loss, Adam) stays eager
        transform = model._transform
        transform.forward = torch.compile(transform.forward)
        transform.inverse = torch.compile(transform.inverse)

    def step(i):  # precision: only ours, whose step handles it itself
        return raw_step(batches[i % len(batches)])

    def sample(classes, n):
        with torch.no_grad(), autocast_context(variant.precision, device):
            return raw_sample(classes, n)

    return Runner(variant, model, optimizer, step, sample)


def run_variants(variants, reference0, flow0, data, sizes, args, batches, device, log):
    """Measure every variant; timings are interleaved (see ``--sequential``).

    Interleaved: round ``i`` runs one step of every variant (order rotated each
    round), so a change of machine load during the run hits every variant alike
    instead of biasing the ratios. Sampling is interleaved the same way, one
    batch of ``--sample-batch`` features of one class per variant per round.

    Returns:
        ``(results, failures)``; a variant that raises is dropped, with its error,
        and the others go on (the reference must not fail).
    """
    runners: list[Runner] = []
    failures: list[dict[str, str]] = []

    def guarded(runner: Runner | None, variant: Variant, what: Callable[[], Any]) -> bool:
        try:
            what()
            return True
        except Exception as error:  # report the others; say what failed
            if variant.kind == "reference":
                raise
            message = f"{type(error).__name__}: {error}"
            log(f"[{variant.name}] FAILED: {message}")
            failures.append({"name": variant.name, "error": message})
            if runner is not None and runner in runners:
                runners.remove(runner)
            if variant.compile:
                torch._dynamo.reset()
            return False

    for variant in variants:
        made: list[Runner] = []

        def make(v=variant, out=made):
            out.append(make_runner(v, reference0, flow0, data, sizes, args, batches, device))

        if not guarded(None, variant, make):
            continue
        runner = made[0]
        runners.append(runner)
        runner.model.train()
        log(f"[{variant.name}] warm-up ({args.warmup} steps)")
        guarded(runner, variant, lambda r=runner: time_calls(r.step, args.warmup, device))

    def rounds(count: int, body: Callable[[Runner, int], None]) -> None:
        if args.sequential:
            for runner in list(runners):
                for i in range(count):
                    if not guarded(runner, runner.variant, lambda r=runner, i=i: body(r, i)):
                        break
            return
        for i in range(count):
            shift = i % max(1, len(runners))
            for runner in runners[shift:] + runners[:shift]:
                guarded(runner, runner.variant, lambda r=runner, i=i: body(r, i))

    def timed_step(runner: Runner, i: int) -> None:
        runner.step_times += time_calls(lambda _: runner.step(args.warmup + i), 1, device)

    log(f"timing {args.steps} steps of {len(runners)} variants")
    rounds(args.steps, timed_step)

    for runner in list(runners):
        log(f"[{runner.variant.name}] FLOPs and memory of one step")

        def measure(r=runner):
            flops, memory = flops_and_peak_memory(lambda: r.step(0), device)
            stats = summarize(r.step_times)
            r.result.update(
                {
                    "name": r.variant.name,
                    "model": r.variant.kind,
                    "precision": r.variant.precision,
                    "compile": r.variant.compile,
                    "fused_adam": r.variant.fused_adam,
                    "train_step": stats,
                    "train_step_flops": flops,
                    "train_step_gflops": flops / stats["median_s"] / 1e9,
                    "train_step_peak_memory_bytes": memory["bytes"],
                    "memory_method": memory["method"],
                    "state_bytes": state_bytes(r.model, r.optimizer),
                }
            )
            if args.profile:
                r.result["train_step_profile"] = profile_top_ops(lambda: r.step(1), args.profile)
            r.model.eval()

        guarded(runner, runner.variant, measure)

    unseen_a = data.class_embeddings[data.unseen][: args.sample_classes]
    n = args.samples_per_class
    one_batch = min(n, args.sample_batch)
    for runner in list(runners):  # FLOPs and memory of one batch; also the warm-up

        def sample_flops(r=runner):
            flops, memory = flops_and_peak_memory(lambda: r.sample(unseen_a[:1], one_batch), device)
            r.result["sampling_flops_per_feature"] = flops / one_batch
            r.result["sampling_batch_peak_memory_bytes"] = memory["bytes"]

        guarded(runner, runner.variant, sample_flops)
    jobs = [
        (k, min(one_batch, n - start))
        for k in range(unseen_a.shape[0])
        for start in range(0, n, one_batch)
    ]
    log(f"sampling {n} x {unseen_a.shape[0]} features with {len(runners)} variants")

    def timed_sample(runner: Runner, i: int) -> None:
        k, rows = jobs[i]
        runner.sample_times += time_calls(
            lambda _: runner.sample(unseen_a[k : k + 1], rows), 1, device
        )
        runner.sample_count += rows

    rounds(len(jobs), timed_sample)
    for runner in runners:
        seconds = sum(runner.sample_times)
        rate = runner.sample_count / seconds
        runner.result.update(
            {
                "sampling_features": runner.sample_count,
                "sampling_s": seconds,
                "sampling_features_per_s": rate,
                "sampling_gflops": runner.result["sampling_flops_per_feature"] * rate / 1e9,
            }
        )
    return [r.result for r in runners], failures


# ---------------------------------------------------------------------- reporting


def machine_description(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "device": str(device),
    }
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in lscpu.splitlines():
            if line.startswith("Model name:"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        info["cpu_model"] = platform.processor() or "unknown"
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    try:
        info["load_average_1m"] = os.getloadavg()[0]
    except OSError:
        pass
    return info


def add_ratios(results: list[dict[str, Any]]) -> None:
    reference = next(r for r in results if r["model"] == "reference")
    for r in results:
        r["train_step_speedup"] = reference["train_step"]["median_s"] / r["train_step"]["median_s"]
        r["sampling_speedup"] = (
            reference["sampling_s"]
            / r["sampling_s"]
            * (r["sampling_features"] / reference["sampling_features"])
        )
        # The model's FLOPs as the reference counts them, over our time: a figure
        # that does not shrink when we skip work the reference does.
        r["train_step_model_gflops"] = (
            reference["train_step_flops"] / r["train_step"]["median_s"] / 1e9
        )


#: The issue's targets: (description, result name, key, minimum).
TARGETS = (
    ("training step fp32 >= 1.5x reference", "ours-fp32", "train_step_speedup", 1.5),
    ("training step bf16 >= 3x reference", "ours-bf16", "train_step_speedup", 3.0),
    ("sampling fp32 >= 1.5x reference", "ours-fp32", "sampling_speedup", 1.5),
    ("sampling bf16 >= 3x reference", "ours-bf16", "sampling_speedup", 3.0),
    ("fp32 step >= 70% of fp32 matmul peak", "ours-fp32", "train_step_peak_fraction", 0.7),
)


def check_targets(results: list[dict[str, Any]], peak_fp32: float) -> list[dict[str, Any]]:
    by_name = {r["name"]: r for r in results}
    for r in results:
        r["train_step_peak_fraction"] = r["train_step_gflops"] / peak_fp32
    checks = []
    for description, name, key, minimum in TARGETS:
        value = by_name[name][key] if name in by_name else None
        checks.append(
            {
                "target": description,
                "value": value,
                "minimum": minimum,
                "met": None if value is None else value >= minimum,
            }
        )
    return checks


def _mb(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:.1f}"


def format_table(report: dict[str, Any]) -> str:
    peak32 = report["matmul_peak_gflops"]["fp32"]
    peak16 = report["matmul_peak_gflops"]["bf16"]
    lines = [
        f"machine: {report['machine'].get('cpu_model', '?')}, {report['machine']['threads']} "
        f"threads, torch {report['machine']['torch']}, device {report['machine']['device']}",
        f"matmul peak ({report['settings']['matmul_size']}^2): fp32 {peak32:.0f} GFLOP/s, "
        f"bf16 {peak16:.0f} GFLOP/s",
        f"our step: {report['our_step']}",
        "agreement (mapped weights, fp32): "
        + ("OK" if report["agreement"]["ok"] else "MISMATCH")
        + ", "
        + ", ".join(f"{k} {v:.3g}" for k, v in report["agreement"].items() if k != "ok"),
    ]
    for failure in report["failures"]:
        lines.append(f"FAILED {failure['name']}: {failure['error']}")
    for note in report["mapping_notes"]:
        lines.append(f"weight mapping: {note}")
    header = (
        "| variant | step ms (median) | IQR ms | step x | GFLOP/step | GFLOP/s counted "
        "| GFLOP/s model | % fp32 peak | samples/s | sampling x | sampling GFLOP/s "
        "| step peak MB |"
    )
    lines += ["", header, "|" + "---|" * (header.count("|") - 1)]
    for r in report["results"]:
        s = r["train_step"]
        lines.append(
            f"| {r['name']} | {1e3 * s['median_s']:.1f} | {1e3 * s['iqr_s']:.1f} "
            f"| {r['train_step_speedup']:.2f} | {r['train_step_flops'] / 1e9:.2f} "
            f"| {r['train_step_gflops']:.0f} | {r['train_step_model_gflops']:.0f} "
            f"| {100 * r['train_step_gflops'] / peak32:.0f} "
            f"| {r['sampling_features_per_s']:.0f} | {r['sampling_speedup']:.2f} "
            f"| {r['sampling_gflops']:.0f} "
            f"| {_mb(r['train_step_peak_memory_bytes'])} |"
        )
    lines.append("")
    if report["settings"]["quick"]:
        lines.append("(--quick sizes: the targets below are meaningless at this size)")
    for check in report["targets"]:
        verdict = {True: "met", False: "NOT met", None: "not measured"}[check["met"]]
        value = "-" if check["value"] is None else f"{check['value']:.2f}"
        lines.append(f"target: {check['target']}: {value} ({verdict})")
    lines.append(f"wall time: {report['wall_s']:.0f} s")
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument(
        "--precision",
        choices=["fp32", "bf16", "both"],
        default="both",
        help="which precisions of ours to run (default both)",
    )
    p.add_argument("--compile", action="store_true", help="also run ours with torch.compile")
    p.add_argument(
        "--plain-adam",
        action="store_true",
        help="also run ours with the reference's plain torch.optim.Adam (the trainer's is fused)",
    )
    p.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke run")
    p.add_argument("--steps", type=int, default=20, help="timed training steps (>= 20)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument(
        "--sequential",
        action="store_true",
        help="time one variant after the other (default: interleaved rounds)",
    )
    for key in ("classes", "seen", "attributes", "features", "train_size", "batch"):
        p.add_argument(f"--{key.replace('_', '-')}", type=int, default=None)
    p.add_argument("--blocks", type=int, default=None, help="coupling blocks K")
    p.add_argument("--hidden", type=int, default=None, help="coupling-net width")
    p.add_argument("--semantic", type=int, default=None, help="dim(h)")
    p.add_argument("--samples-per-class", type=int, default=None)
    p.add_argument(
        "--sample-classes",
        type=int,
        default=1,
        help="unseen classes to sample for the throughput (all 12: ~18 TFLOP per model)",
    )
    p.add_argument("--sample-batch", type=int, default=3000)
    p.add_argument("--matmul-size", type=int, default=None, help="default 4096 (quick: 512)")
    p.add_argument("--matmul-repeats", type=int, default=5)
    p.add_argument("--seed", type=int, default=6152)
    p.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="ROWS",
        help="print the top ROWS ops (self CPU time) of one step of each variant",
    )
    p.add_argument(
        "--json",
        nargs="?",
        const="-",
        default=None,
        metavar="PATH",
        help="write JSON to PATH (or stdout when no PATH; the table then goes to stderr)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    started = time.perf_counter()
    args = parse_args(argv)
    if args.steps < 2 or args.warmup < 0 or args.sample_batch < 1:
        raise SystemExit(
            f"Expected --steps >= 2 (20 or more for the report), --warmup >= 0 and "
            f"--sample-batch >= 1; got {args.steps}, {args.warmup}, {args.sample_batch}."
        )
    device = torch.device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    sizes = dict(APY)
    if args.quick:
        sizes.update(QUICK)
    for key in ("classes", "seen", "attributes", "features", "train_size", "batch", "blocks"):
        if getattr(args, key) is not None:
            sizes[key] = getattr(args, key)
    for key in ("hidden", "semantic", "samples_per_class"):
        if getattr(args, key) is not None:
            sizes[key] = getattr(args, key)
    args.samples_per_class = sizes["samples_per_class"]
    matmul_size = args.matmul_size or (512 if args.quick else 4096)
    out = sys.stderr if args.json == "-" else sys.stdout

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    generator = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)
    data = make_data(sizes, generator, device)
    flow = build_gsmflow(
        sizes["features"],
        data.class_embeddings,
        num_blocks=sizes["blocks"],
        hidden_features=sizes["hidden"],
        semantic_features=sizes["semantic"],
        clamp=1.0,
    ).to(device)
    reference = ReferenceGSMFlow(
        sizes["features"],
        data.class_embeddings.cpu(),
        num_blocks=sizes["blocks"],
        hidden_features=sizes["hidden"],
        semantic_features=sizes["semantic"],
        clamp=1.0,
    ).to(device)
    anchors_ref = choose_anchor_indices(data.class_embeddings.cpu())
    mapping_notes = map_weights(flow, reference)
    total = args.warmup + args.steps + 3
    batches = [
        torch.randperm(sizes["train_size"], generator=generator)[: sizes["batch"]].to(device)
        for _ in range(total)
    ]
    agreement = check_agreement(flow, reference, data, batches[0])
    log(f"agreement: {agreement}")

    log("matmul peak")
    peaks = {
        "fp32": matmul_peak(matmul_size, torch.float32, device, args.matmul_repeats),
        "bf16": matmul_peak(matmul_size, torch.bfloat16, device, args.matmul_repeats),
    }

    variants = [Variant("reference (FrEIA)", "reference", fused_adam=False)]
    precisions = ["fp32", "bf16"] if args.precision == "both" else [args.precision]
    for precision in precisions:
        variants.append(Variant(f"ours-{precision}", "ours", precision))
    if args.plain_adam:
        for precision in precisions:
            variants.append(
                Variant(f"ours-{precision}-plain-adam", "ours", precision, fused_adam=False)
            )
    if args.compile:  # last: a failed compile can leave the dispatcher in a bad state
        for precision in precisions:
            variants.append(Variant(f"ours-{precision}-compile", "ours", precision, True))

    results, failures = run_variants(
        variants, reference, flow, data, sizes, args, batches, device, log
    )
    add_ratios(results)
    targets = check_targets(results, peaks["fp32"])
    report = {
        "machine": machine_description(device),
        "settings": {**sizes, **{k: v for k, v in vars(args).items() if k not in sizes}}
        | {"matmul_size": matmul_size, "reference_anchor_indices": anchors_ref},
        "our_step": "gsmflow_nflows.training.step.train_step",
        "mapping_notes": mapping_notes,
        "agreement": agreement,
        "matmul_peak_gflops": peaks,
        "max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "results": results,
        "failures": failures,
        "targets": targets,
        "wall_s": time.perf_counter() - started,
    }
    print(format_table(report), file=out)
    for r in results:
        if "train_step_profile" in r:
            print(
                f"\n{r['name']}: top ops of one training step\n{r['train_step_profile']}", file=out
            )
    if args.json is not None:
        text = json.dumps(report, indent=2, default=str)
        if args.json == "-":
            print(text)
        else:
            with open(args.json, "w") as f:
                f.write(text + "\n")
    return report


if __name__ == "__main__":
    main()
