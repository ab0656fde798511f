"""``gsmflow table``: datasets x presets x protocols x seeds as one Tune job.

Each trial is ``gsmflow bench`` for one seed (``run_bench``, so ``run_protocol``
and the baselines on the same split and seed); the per-seed results are merged
per (dataset, preset, protocol) into exactly what ``benchmarks/accuracy.py
--json`` writes (a list of ``run_bench`` results) and its Markdown table.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gsmflow_nflows.data import load_dataset
from gsmflow_nflows.errors import ConfigError
from gsmflow_nflows.results_table import markdown
from gsmflow_nflows.sweep.adapter import PROTOCOLS
from gsmflow_nflows.sweep.environment import environment
from gsmflow_nflows.sweep.experiment import Job, claim_storage, run_job
from gsmflow_nflows.sweep.protocol_trials import TableSetup, table_trial
from gsmflow_nflows.sweep.run import resolved_data_root, trial_resources
from gsmflow_nflows.sweep.tune_api import SweepError, require_ray, start_ray
from gsmflow_nflows.training.presets import PRESET_KINDS

METRICS = ("S", "U", "H", "T1")


@dataclass(frozen=True)
class TableRequest:
    """What ``gsmflow table`` was asked for; seeds are ``seed, seed + 1, ...``."""

    datasets: tuple[str, ...]
    storage: str
    presets: tuple[str, ...] = ("default",)
    protocols: tuple[str, ...] = ("final",)
    seeds: int = 3
    seed: int = 0
    data_root: str | None = None
    baselines: bool = True
    address: str | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent: int | None = None
    resume: bool = False
    command: str | None = None

    def check(self) -> None:
        """Raise ``ValueError`` for unknown presets or protocols, or no cells at all."""
        for name, values, known in (
            ("preset", self.presets, PRESET_KINDS),
            ("protocol", self.protocols, PROTOCOLS),
        ):
            unknown = [value for value in values if value not in known]
            if unknown:
                raise ConfigError(
                    f"Unknown {name} {', '.join(unknown)}; choose from {', '.join(known)}."
                )
        if not self.datasets or not self.presets or not self.protocols:
            raise ConfigError("datasets, presets and protocols need one name each at least.")
        if not isinstance(self.seeds, int) or self.seeds < 1:
            raise ConfigError(f"seeds must be a positive integer, got {self.seeds!r}.")

    def cells(self) -> list[dict[str, Any]]:
        """The trials: one per (dataset, preset, protocol, seed), in table order."""
        return [
            {"dataset": dataset, "preset": preset, "protocol": protocol, "seed": seed}
            for dataset in self.datasets
            for preset in self.presets
            for protocol in self.protocols
            for seed in range(self.seed, self.seed + self.seeds)
        ]


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def merge_seeds(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """One ``run_bench`` result over all seeds from one-seed results of the same row.

    Runs and baselines are concatenated in seed order, means and standard
    deviations recomputed as ``run_bench`` computes them, wall times summed.

    Example:
        >>> one = lambda seed, h: {"seeds": [seed], "runs": [{"seed": seed, "S": h, "U": h,
        ...     "H": h, "T1": h}], "baselines": None, "warnings": [], "seconds": 1.0}
        >>> merged = merge_seeds([one(1, 0.5), one(0, 0.7)])
        >>> merged["seeds"], round(merged["mean"]["H"], 2), merged["seconds"]
        ([0, 1], 0.6, 2.0)
    """
    per_seed = sorted(per_seed, key=lambda result: result["seeds"][0])
    merged = dict(per_seed[0])
    merged["seeds"] = [seed for result in per_seed for seed in result["seeds"]]
    merged["runs"] = [run for result in per_seed for run in result["runs"]]
    merged["mean"], merged["std"] = {}, {}
    for metric in METRICS:
        merged["mean"][metric], merged["std"][metric] = _mean_std(
            [run[metric] for run in merged["runs"]]
        )
    if all(result.get("baselines") is not None for result in per_seed):
        entries = [entry for result in per_seed for entry in result["baselines"]["per_seed"]]
        names = [name for name in entries[0] if name != "seed"]
        mean: dict[str, dict[str, float]] = {name: {} for name in names}
        std: dict[str, dict[str, float]] = {name: {} for name in names}
        for name in names:
            for metric in METRICS:
                mean[name][metric], std[name][metric] = _mean_std(
                    [entry[name][metric] for entry in entries]
                )
        merged["baselines"] = {"per_seed": entries, "mean": mean, "std": std}
    else:
        merged["baselines"] = None
    merged["warnings"] = list(dict.fromkeys(w for r in per_seed for w in r.get("warnings", [])))
    merged["seconds"] = sum(result["seconds"] for result in per_seed)
    return merged


def run_table(request: TableRequest) -> dict[str, Any]:
    """Run every cell of the table as one Tune job and gather the rows.

    Returns:
        ``{"results": [run_bench result per row], "markdown": table, "environment",
        "seconds", "storage"}``; ``results`` is what ``benchmarks/accuracy.py --json``
        writes, ``markdown`` its table (with its ``Machine:`` line).

    Example:
        >>> table = run_table(TableRequest(("digits",), "/tmp/t", presets=("smoke",),
        ...                                seeds=2))  # doctest: +SKIP
        >>> print(table["markdown"])  # doctest: +SKIP
    """
    started = time.perf_counter()
    request.check()
    api = require_ray()
    storage = Path(request.storage).expanduser().resolve()
    data_root = resolved_data_root(request.data_root, request.address)
    for dataset in dict.fromkeys(request.datasets):  # checked (and built-ins generated) here
        load_dataset(dataset, data_root=data_root)
    signature = {
        "kind": "table",
        **{k: list(getattr(request, k)) for k in ("datasets", "presets", "protocols")},
        "seeds": request.seeds,
        "seed": request.seed,
        "data_root": request.data_root,
        "baselines": request.baselines,
    }
    claim_storage(storage, signature, resume=request.resume)
    resources, threads, device = trial_resources(request.cpus_per_trial, request.gpus_per_trial)
    setup = TableSetup(
        data_root=data_root,
        baselines=request.baselines,
        checkpoint_root=str(storage / "checkpoints"),
        threads=threads,
        device=device,
    )
    cells = request.cells()
    owns_ray = start_ray(api, request.address)
    try:
        cluster = dict(api.ray.cluster_resources())
        job = Job(
            name="table",
            trainable=api.tune.with_parameters(table_trial, setup=setup),
            param_space={"cell": api.tune.grid_search(cells)},
            expected=len(cells),
            max_concurrent=request.max_concurrent,
            resources=resources,
        )
        results = run_job(api, job, storage, resume=request.resume)
    finally:
        if owns_ray:
            api.ray.shutdown()
    errors = [result.error for result in results if result.error is not None]
    if errors:
        raise SweepError(f"a table cell failed: {str(errors[0]).strip().splitlines()[-1]}")
    rows: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for cell in cells:
        rows.setdefault((cell["dataset"], cell["preset"], cell["protocol"]), [])
    for result in results:
        cell = result.config["cell"]
        key = (cell["dataset"], cell["preset"], cell["protocol"])
        rows[key].append(json.loads(result.metrics["record"]))
    env = environment(
        command=request.command,
        devices=[row["device"] for entries in rows.values() for row in entries],
        ray_version=api.version,
        cluster=cluster,
    )
    merged = [merge_seeds(entries) for entries in rows.values()]
    machine = (
        f"{env['machine']}, {request.cpus_per_trial:g} CPU(s) a trial, torch {env['torch']}, "
        f"Ray {env['ray']} ({len(cells)} trials, one Tune job)"
    )
    return {
        "results": merged,
        "markdown": markdown(merged) + f"\n\nMachine: {machine}.\n",
        "environment": env,
        "seconds": time.perf_counter() - started,
        "storage": str(storage),
    }
