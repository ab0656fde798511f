"""Speed benchmark: our GSMFlow (nflows) against the authors' model in FrEIA.

Runs, in ONE process, on identical synthetic aPY-shaped data and (where the
structures correspond) identical weights:

* ``reference (FrEIA)``: the authors' model written with FrEIA ``GLOWCouplingBlock``
  (``benchmarks/freia_reference.py``), the authors' training step and plain Adam;
* ``reference (FrEIA, fused Adam)``: the same with our trainer's ``Adam(fused=True)``;
* ``ours-fp32``: ``gsmflow_nflows.build_gsmflow`` with our training step, eager;
* ``ours-bf16``: the same under ``torch.autocast(device_type, torch.bfloat16)``;
* ``ours-*-plain-adam`` (``--plain-adam``): ours with the reference's plain Adam;
* ``ours-*-compile`` (``--compile``): the same with ``torch.compile``.

For each: training-step time (median and IQR over ``--steps`` steps after
``--warmup`` steps; a full step: perturbation, NLL, backward, prototype loss,
Adam), sampling throughput (features/s at ``--samples-per-class`` features per
class, in batches of ``--sample-batch``), peak memory, FLOPs counted with
``torch.utils.flop_counter.FlopCounterMode`` and the achieved GFLOP/s against
a square-matmul peak measured in the same run, and the ratios to the reference:
to the authors' (``step x``), and to the one with the same Adam as the variant
(``step x same Adam``: the step's own gain, the optimizer switch left out).

Examples:
    PYTHONPATH=. python benchmarks/speed.py                # aPY size, table on stdout
    PYTHONPATH=. python benchmarks/speed.py --json         # JSON on stdout, table on stderr
    PYTHONPATH=. python benchmarks/speed.py --quick        # tiny smoke run (seconds)
    PYTHONPATH=. python benchmarks/speed.py --compile --json results.json

The parts live in ``benchmarks/speedlib/``; ``benchmarks/README.md`` says what
each column means.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from typing import Any

import torch

try:
    from benchmarks.speedlib.report import add_ratios, check_targets, emit, machine_description
    from benchmarks.speedlib.rounds import Schedule, measure_variants
    from benchmarks.speedlib.settings import APY_SEED, resolve_settings
    from benchmarks.speedlib.timing import matmul_peak
    from benchmarks.speedlib.variants import build_variants
    from benchmarks.speedlib.workload import build_workload, check_agreement
except ModuleNotFoundError as error:
    if error.name == "FrEIA" or (error.name or "").startswith("FrEIA."):
        raise SystemExit(
            f"benchmarks/speed.py needs FrEIA for the reference model ({error}); "
            "install the bench extra: pip install -e '.[bench]'"
        ) from error
    if error.name == "benchmarks":
        raise SystemExit(
            "benchmarks/speed.py imports its parts as `benchmarks.*`: run it from the "
            "repository root with PYTHONPATH=. (python benchmarks/speed.py ...)"
        ) from error
    raise


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (``--help`` shows this module's docstring), checked."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    _add_variant_flags(p)
    _add_schedule_flags(p)
    _add_size_flags(p)
    _add_output_flags(p)
    args = p.parse_args(argv)
    if args.steps < 2 or args.warmup < 0 or args.sample_batch < 1:
        raise SystemExit(
            f"Expected --steps >= 2 (20 or more for the report), --warmup >= 0 and "
            f"--sample-batch >= 1; got {args.steps}, {args.warmup}, {args.sample_batch}."
        )
    return args


def _add_variant_flags(p: argparse.ArgumentParser) -> None:
    """Where it runs, and which of our variants."""
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


def _add_schedule_flags(p: argparse.ArgumentParser) -> None:
    """How many steps and samples each variant runs, in which order, from which seed."""
    p.add_argument(
        "--steps",
        type=int,
        default=20,
        help="timed training steps per variant, after the warm-up: the step median\n"
        "and IQR are over these (default 20, at least 2; fewer give rough quartiles);\n"
        "sampling is timed separately (--samples-per-class, --sample-batch)",
    )
    p.add_argument(
        "--warmup", type=int, default=3, help="untimed training steps per variant (default 3)"
    )
    p.add_argument(
        "--sequential",
        action="store_true",
        help="time one variant after the other (default: interleaved rounds)",
    )
    p.add_argument(
        "--sample-classes",
        type=int,
        default=1,
        help="unseen classes to sample for the throughput (all 12: ~18 TFLOP per model)",
    )
    p.add_argument("--sample-batch", type=int, default=3000)
    p.add_argument("--matmul-size", type=int, default=None, help="default 4096 (quick: 512)")
    p.add_argument("--matmul-repeats", type=int, default=5)
    p.add_argument("--seed", type=int, default=APY_SEED, help=f"default {APY_SEED} (aPY's preset)")


def _add_size_flags(p: argparse.ArgumentParser) -> None:
    """``--quick``, and one flag per size of :data:`~benchmarks.speedlib.settings.SIZE_FLAGS`."""
    p.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke run")
    for key in ("classes", "seen", "attributes", "features", "train_size", "batch"):
        p.add_argument(f"--{key.replace('_', '-')}", type=int, default=None)
    p.add_argument("--blocks", type=int, default=None, help="coupling blocks K")
    p.add_argument("--hidden", type=int, default=None, help="coupling-net width")
    p.add_argument("--semantic", type=int, default=None, help="dim(h)")
    p.add_argument("--samples-per-class", type=int, default=None)


def _add_output_flags(p: argparse.ArgumentParser) -> None:
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


def log(message: str) -> None:
    """Progress, on stderr (stdout carries the table or the JSON)."""
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the table (and JSON), and return the report."""
    started = time.perf_counter()
    args = parse_args(argv)
    device = torch.device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    settings = resolve_settings(args)
    args.samples_per_class = settings["samples_per_class"]
    matmul_size = args.matmul_size or (512 if args.quick else 4096)

    # 3 batches beyond the timed steps: the FLOP, memory and profiling steps reuse 0 and 1.
    workload = build_workload(settings, args.warmup + args.steps + 3, args.seed, device)
    agreement = check_agreement(workload)
    log(f"agreement: {agreement}")
    log("matmul peak")
    peaks = {
        name: matmul_peak(matmul_size, dtype, device, args.matmul_repeats)
        for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))
    }
    precisions = ["fp32", "bf16"] if args.precision == "both" else [args.precision]
    variants = build_variants(precisions, plain_adam=args.plain_adam, compile=args.compile)
    schedule = Schedule(
        warmup=args.warmup,
        steps=args.steps,
        sequential=args.sequential,
        profile_rows=args.profile,
        sample_classes=args.sample_classes,
        samples_per_class=settings["samples_per_class"],
        sample_batch=args.sample_batch,
    )
    results, failures = measure_variants(variants, workload, schedule, log)
    add_ratios(results)
    targets = check_targets(results, peaks["fp32"])
    report = {
        "machine": machine_description(device),
        "settings": {**settings, **{k: v for k, v in vars(args).items() if k not in settings}}
        | {
            "matmul_size": matmul_size,
            "reference_anchor_indices": workload.reference_anchor_indices,
        },
        "our_step": "gsmflow_nflows.training.step.train_step",
        "mapping_notes": workload.mapping_notes,
        "agreement": agreement,
        "matmul_peak_gflops": peaks,
        "max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "results": results,
        "failures": failures,
        "targets": targets,
        "wall_s": time.perf_counter() - started,
    }
    emit(report, args.json)
    return report


if __name__ == "__main__":
    main()
