"""Running every variant's phases in rounds, so that machine load hits all variants alike.

Phases, each over all variants: warm-up steps; the timed steps, INTERLEAVED
(round ``i`` runs one step of every variant, the order rotated each round;
``sequential`` times one variant after the other); one step under the FLOP
counter and memory profiler; one sampling batch the same way (also the
sampling warm-up); then the timed sampling batches, interleaved like the steps.
A variant that raises is dropped with its error and the others go on; the
reference must not fail.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch

from benchmarks.speedlib.timing import (
    flops_and_peak_memory,
    profile_top_ops,
    state_bytes,
    summarize,
    time_calls,
)
from benchmarks.speedlib.variants import Runner, Variant, make_runner
from benchmarks.speedlib.workload import Workload


@dataclasses.dataclass(frozen=True)
class Schedule:
    """How much each variant runs, and in which order.

    Attributes:
        warmup: untimed training steps per variant.
        steps: timed training steps per variant (the step median and IQR).
        sequential: time one variant after the other instead of interleaving.
        profile_rows: rows of the profiler table of one step (0: no profile).
        sample_classes: unseen classes sampled for the throughput.
        samples_per_class: features generated per sampled class.
        sample_batch: features per sampling batch.
    """

    warmup: int
    steps: int
    sequential: bool
    profile_rows: int
    sample_classes: int
    samples_per_class: int
    sample_batch: int


class VariantPool:
    """The variants still being measured, and the errors of those that were dropped."""

    def __init__(self, sequential: bool, log: Callable[[str], None]) -> None:
        self.sequential = sequential
        self.log = log
        self.runners: list[Runner] = []
        self.failures: list[dict[str, str]] = []

    def guarded(self, variant: Variant, what: Callable[[], Any], runner: Runner | None) -> bool:
        """Run ``what``; if it raises, record the error and drop ``runner`` (re-raise for the
        reference). Returns whether it succeeded."""
        try:
            what()
            return True
        except Exception as error:  # report the others; say what failed
            if variant.kind == "reference":
                raise
            message = f"{type(error).__name__}: {error}"
            self.log(f"[{variant.name}] FAILED: {message}")
            self.failures.append({"name": variant.name, "error": message})
            if runner is not None and runner in self.runners:
                self.runners.remove(runner)
            if variant.compile:
                torch._dynamo.reset()
            return False

    def add(self, variant: Variant, make: Callable[[], Runner]) -> Runner | None:
        """The runner ``make`` builds, now in the pool; ``None`` if building it failed."""
        made: list[Runner] = []
        if not self.guarded(variant, lambda: made.append(make()), None):
            return None
        self.runners.append(made[0])
        return made[0]

    def each(self, body: Callable[[Runner], None]) -> None:
        """``body(runner)`` for every runner, one after the other."""
        for runner in list(self.runners):
            self.guarded(runner.variant, lambda r=runner: body(r), runner)

    def rounds(self, count: int, body: Callable[[Runner, int], None]) -> None:
        """``body(runner, i)`` for ``i < count``: interleaved, or per runner if ``sequential``."""
        if self.sequential:
            for runner in list(self.runners):
                for i in range(count):
                    if not self.guarded(runner.variant, lambda r=runner, i=i: body(r, i), runner):
                        break
            return
        for i in range(count):
            shift = i % max(1, len(self.runners))
            for runner in self.runners[shift:] + self.runners[:shift]:
                self.guarded(runner.variant, lambda r=runner, i=i: body(r, i), runner)


def measure_variants(
    variants: list[Variant], workload: Workload, schedule: Schedule, log: Callable[[str], None]
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Measure every variant's training step and sampling.

    Returns:
        ``(results, failures)``: one result dict per variant that got through,
        and ``{"name", "error"}`` for each one that raised.
    """
    device = workload.device
    pool = VariantPool(schedule.sequential, log)
    for variant in variants:
        runner = pool.add(
            variant, lambda v=variant: make_runner(v, workload, schedule.sample_batch)
        )
        if runner is None:
            continue
        runner.model.train()
        log(f"[{variant.name}] warm-up ({schedule.warmup} steps)")
        pool.guarded(variant, lambda r=runner: time_calls(r.step, schedule.warmup, device), runner)

    def timed_step(runner: Runner, i: int) -> None:
        runner.step_times += time_calls(lambda _: runner.step(schedule.warmup + i), 1, device)

    log(f"timing {schedule.steps} steps of {len(pool.runners)} variants")
    pool.rounds(schedule.steps, timed_step)
    for runner in list(pool.runners):
        log(f"[{runner.variant.name}] FLOPs and memory of one step")
        pool.guarded(
            runner.variant,
            lambda r=runner: _measure_step(r, schedule.profile_rows, device),
            runner,
        )
    _measure_sampling(pool, workload, schedule, log)
    return [r.result for r in pool.runners], pool.failures


def _measure_step(runner: Runner, profile_rows: int, device: torch.device) -> None:
    """The step's statistics, FLOPs, peak memory and state size (and profile) into ``result``."""
    flops, memory = flops_and_peak_memory(lambda: runner.step(0), device)
    stats = summarize(runner.step_times)
    variant = runner.variant
    runner.result.update(
        {
            "name": variant.name,
            "model": variant.kind,
            "precision": variant.precision,
            "compile": variant.compile,
            "fused_adam": variant.fused_adam,
            "train_step": stats,
            "train_step_flops": flops,
            "train_step_gflops": flops / stats["median_s"] / 1e9,
            "train_step_peak_memory_bytes": memory["bytes"],
            "memory_method": memory["method"],
            "state_bytes": state_bytes(runner.model, runner.optimizer),
        }
    )
    if profile_rows:
        runner.result["train_step_profile"] = profile_top_ops(lambda: runner.step(1), profile_rows)
    runner.model.eval()


def _measure_sampling(
    pool: VariantPool, workload: Workload, schedule: Schedule, log: Callable[[str], None]
) -> None:
    """FLOPs and memory of one sampling batch, then the timed batches in rounds, into ``result``."""
    data, device = workload.data, workload.device
    unseen = data.class_embeddings[data.unseen][: schedule.sample_classes]
    n = schedule.samples_per_class
    one_batch = min(n, schedule.sample_batch)

    def sample_flops(runner: Runner) -> None:
        flops, memory = flops_and_peak_memory(lambda: runner.sample(unseen[:1], one_batch), device)
        runner.result["sampling_flops_per_feature"] = flops / one_batch
        runner.result["sampling_batch_peak_memory_bytes"] = memory["bytes"]

    pool.each(sample_flops)
    jobs = [
        (k, min(one_batch, n - start))
        for k in range(len(unseen))
        for start in range(0, n, one_batch)
    ]
    log(f"sampling {n} x {unseen.shape[0]} features with {len(pool.runners)} variants")

    def timed_sample(runner: Runner, i: int) -> None:
        k, rows = jobs[i]
        runner.sample_times += time_calls(
            lambda _: runner.sample(unseen[k : k + 1], rows), 1, device
        )
        runner.sample_count += rows

    pool.rounds(len(jobs), timed_sample)
    for runner in pool.runners:
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
