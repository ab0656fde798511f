"""``gsmflow sweep`` as a library call: search on the validation split, then test twice.

Phases (each one Tune experiment under the storage folder, each resumable):

1. **search** (``<storage>/search``): ``trials`` configs drawn from the space,
   each trained on the validation split and scored by validation H at every
   evaluation point (:mod:`gsmflow_nflows.sweep.objective`); ASHA stops hopeless
   trials at those points. No trial loads the test split.
2. **selection**: the trial with the best validation H (first on ties).
3. **final** (``<storage>/final``): the chosen config and the preset's own,
   each retrained on trainval and tested once (protocol ``final``), over the same seeds.

The preset's config is derived from the trainval split's sizes (as ``gsmflow
bench`` derives it) before the search starts.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gsmflow_nflows import __version__
from gsmflow_nflows.data import default_data_root, load_dataset
from gsmflow_nflows.errors import ConfigError
from gsmflow_nflows.sweep.adapter import (
    length_field,
    trainval_preset,
    validation_points,
)
from gsmflow_nflows.sweep.environment import environment
from gsmflow_nflows.sweep.experiment import Job, claim_storage, run_job, trial_id
from gsmflow_nflows.sweep.objective import SearchSetup, search_trial
from gsmflow_nflows.sweep.protocol_trials import FinalSetup, final_trial
from gsmflow_nflows.sweep.space import (
    Space,
    apply_overrides,
    check_space,
    default_space,
    parse_space,
    plain,
    to_tune,
)
from gsmflow_nflows.sweep.tune_api import RayAPI, SweepError, require_ray, start_ray
from gsmflow_nflows.training.config import GSMFlowConfig
from gsmflow_nflows.training.presets import PRESET_KINDS

METRICS = ("S", "U", "H", "T1")
SCHEDULERS = ("asha", "fifo")
#: ASHA's reduction factor: a third of the trials go on at each rung.
ASHA_REDUCTION = 3


@dataclass(frozen=True)
class SweepRequest:
    """What ``gsmflow sweep`` was asked for.

    ``space`` is the decoded JSON of ``--space`` (``None``: the default space);
    ``seeds`` counts the final protocol's seeds ``seed, seed + 1, ...``; the search
    trains with ``seed``. ``storage`` is the folder of the Tune experiments.
    """

    dataset: str
    trials: int
    storage: str
    data_root: str | None = None
    preset: str = "default"
    space: dict[str, Any] | None = None
    space_source: str = "default"
    seeds: int = 1
    seed: int = 0
    scheduler: str = "asha"
    address: str | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent: int | None = None
    resume: bool = False
    command: str | None = None

    def check(self) -> None:
        """Raise ``ValueError`` for values no sweep can run with."""
        if self.preset not in PRESET_KINDS:
            raise ConfigError(
                f"Unknown preset {self.preset!r}; choose from {', '.join(PRESET_KINDS)}."
            )
        if self.scheduler not in SCHEDULERS:
            raise ConfigError(f"Unknown scheduler {self.scheduler!r}; choose asha or fifo.")
        for name in ("trials", "seeds"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(
                    f"--{name} must be a positive integer, got {getattr(self, name)!r}."
                )
        if self.cpus_per_trial <= 0 or self.gpus_per_trial < 0:
            raise ConfigError("cpus_per_trial must be > 0 and gpus_per_trial >= 0.")
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise ConfigError(f"max_concurrent must be >= 1, got {self.max_concurrent}.")

    def signature(self, space: Space) -> dict[str, Any]:
        """What ``--resume`` must find unchanged (resources and the cluster may change)."""
        return {
            "kind": "sweep",
            "dataset": self.dataset.lower(),
            "data_root": self.data_root,
            "preset": self.preset,
            "space": space,
            "trials": self.trials,
            "seed": self.seed,
            "seeds": self.seeds,
            "scheduler": self.scheduler,
        }


def trial_resources(cpus: float, gpus: float) -> tuple[dict[str, float], int, str | None]:
    """Tune resources of a trial, its torch thread count, its device (``None``: CUDA if any).

    Example:
        >>> trial_resources(2, 0)
        ({'cpu': 2}, 2, 'cpu')
    """
    resources = {"cpu": cpus, **({"gpu": gpus} if gpus > 0 else {})}
    return resources, max(1, int(cpus)), None if gpus > 0 else "cpu"


def resolved_data_root(data_root: str | None, address: str | None) -> str | None:
    """An absolute data root for the trials (they run in their own folders).

    On a cluster (``address``) an unset root stays unset: each node uses its own
    default (``$GSMFLOW_DATA`` or ``~/.cache/gsmflow``).
    """
    if data_root is None:
        return None if address is not None else str(default_data_root().resolve())
    return str(Path(data_root).expanduser().resolve())


def _asha(api: RayAPI, base: GSMFlowConfig, space: Space, val_data: Any) -> Any:
    """ASHA on the flow's iteration count: rungs from the first evaluation point."""
    from ray.tune.schedulers import ASHAScheduler

    lengths = [validation_points(base, val_data)[-1]]
    for key, domain in space.items():
        ((kind, value),) = domain.items()
        for candidate in value if kind == "choice" else value[:2]:
            lengths.append(validation_points(apply_overrides(base, {key: candidate}), val_data)[-1])
    first = validation_points(base, val_data)[0]
    max_t = max(lengths)
    return ASHAScheduler(
        time_attr="iteration",
        metric="best_H",
        mode="max",
        max_t=max_t,
        grace_period=min(first, max_t),
        reduction_factor=ASHA_REDUCTION,
    )


def trial_record(result: Any, keys: Sequence[str]) -> dict[str, Any]:
    """One search trial for the JSON: its overrides, state and validation metrics."""
    import json

    metrics = result.metrics or {}
    config = {key: plain((result.config or {}).get(key)) for key in keys}
    validation = None
    if "best_H" in metrics:
        validation = {
            name: metrics[name]
            for name in (
                "best_H", "best_S", "best_U", "best_T1", "best_iteration", "best_epoch",
                "iteration", "total_iterations",
            )
        }  # fmt: skip
        validation["evaluations"] = json.loads(metrics["evaluations"])
    if result.error is not None:
        state = "error"
    elif metrics.get("finished"):
        state = "completed"
    else:
        state = "stopped early"
    error = str(result.error).strip().splitlines()[-1] if result.error is not None else None
    return {
        "trial_id": trial_id(result),
        "config": config,
        "state": state,
        "validation": validation,
        "error": error,
        "device": metrics.get("device"),
        "seconds": metrics.get("time_total_s"),
    }


def select_best(trials: list[dict[str, Any]]) -> dict[str, Any]:
    """The trial with the best validation H; the first one on ties.

    Example:
        >>> select_best([{"trial_id": "a", "validation": {"best_H": 0.5}},
        ...              {"trial_id": "b", "validation": {"best_H": 0.7}},
        ...              {"trial_id": "c", "validation": None}])["trial_id"]
        'b'
    """
    scored = [trial for trial in trials if trial["validation"] is not None]
    if not scored:
        errors = [trial["error"] for trial in trials if trial["error"]]
        raise SweepError(
            "no trial reached an evaluation" + (f"; the first error: {errors[0]}" if errors else "")
        )
    return max(scored, key=lambda trial: trial["validation"]["best_H"])


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarise_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """``{"runs", "mean", "std"}`` of per-seed protocol results, runs in seed order.

    Example:
        >>> summarise_runs([{"seed": 1, "S": .5, "U": .5, "H": .5, "T1": .5},
        ...                 {"seed": 0, "S": .7, "U": .7, "H": .7, "T1": .7}])["std"]["H"]
        0.1414...
    """
    runs = sorted(runs, key=lambda run: run["seed"])
    mean, std = {}, {}
    for metric in METRICS:
        mean[metric], std[metric] = _mean_std([run[metric] for run in runs])
    return {"seeds": [run["seed"] for run in runs], "runs": runs, "mean": mean, "std": std}


def _final_phase(
    api: RayAPI,
    request: SweepRequest,
    configs: dict[str, GSMFlowConfig],
    data_root: str | None,
    storage: Path,
    resources: tuple[dict[str, float], int, str | None],
) -> dict[str, Any]:
    import json

    tune = api.tune
    seeds = list(range(request.seed, request.seed + request.seeds))
    setup = FinalSetup(
        dataset=request.dataset,
        data_root=data_root,
        configs={name: config.to_dict() for name, config in configs.items()},
        checkpoint_root=str(storage / "checkpoints"),
        threads=resources[1],
        device=resources[2],
    )
    job = Job(
        name="final",
        trainable=tune.with_parameters(final_trial, setup=setup),
        param_space={"config": tune.grid_search(list(configs)), "seed": tune.grid_search(seeds)},
        expected=len(configs) * len(seeds),
        max_concurrent=request.max_concurrent,
        resources=resources[0],
    )
    results = run_job(api, job, storage, resume=request.resume)
    errors = [result.error for result in results if result.error is not None]
    if errors:
        raise SweepError(f"a final-protocol run failed: {str(errors[0]).strip().splitlines()[-1]}")
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in configs}
    for result in results:
        runs[result.config["config"]].append(json.loads(result.metrics["record"]))
    return {
        "protocol": "final",
        "seeds": seeds,
        **{name: summarise_runs(entries) for name, entries in runs.items()},
    }


def run_sweep(request: SweepRequest, *, callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    """Search on the validation split, pick the best config, test it beside the preset.

    Args:
        request: what to run.
        callbacks: extra Tune callbacks of the search phase (kept by ``--resume``, which
            restores the experiment as it was started).

    Returns:
        The JSON-ready result: ``trials``, ``best``, ``selected_on`` (``"val"``),
        ``test`` (``final`` protocol, per-seed runs, for ``best`` and ``preset``),
        ``environment``, the space, the preset's config, timings.

    Raises:
        SpaceError: a bad space (before Ray starts).
        SweepError: Ray missing, storage in use, an interrupted phase (resume it).

    Example:
        >>> result = run_sweep(SweepRequest("digits", trials=2, storage="/tmp/s",
        ...                                 preset="smoke"))  # doctest: +SKIP
        >>> result["selected_on"]  # doctest: +SKIP
        'val'
    """
    started = time.perf_counter()
    request.check()
    source = request.space_source if request.space is not None else "default space"
    space = parse_space(request.space, where=source) if request.space is not None else None
    api = require_ray()
    storage = Path(request.storage).expanduser().resolve()
    data_root = resolved_data_root(request.data_root, request.address)
    # Before the search: the preset's values come from the trainval split's sizes.
    base = trainval_preset(request.dataset, data_root, request.preset)
    val_data = load_dataset(request.dataset, data_root=data_root, split="val")
    if space is None:
        space = default_space(base, validation_length_field=length_field(base, val_data))
    check_space(space, base, where=source)
    claim_storage(storage, request.signature(space), resume=request.resume)
    resources = trial_resources(request.cpus_per_trial, request.gpus_per_trial)
    owns_ray = start_ray(api, request.address)
    try:
        cluster = dict(api.ray.cluster_resources())
        searched = time.perf_counter()
        trials = search_phase(
            api, request, space, base, val_data, data_root, storage, resources, callbacks
        )
        search_seconds = time.perf_counter() - searched
        best = select_best(trials)
        configs = {"best": apply_overrides(base, best["config"]), "preset": base}
        tested = time.perf_counter()
        test = _final_phase(api, request, configs, data_root, storage, resources)
        final_seconds = time.perf_counter() - tested
    finally:
        if owns_ray:
            api.ray.shutdown()
    return {
        "gsmflow_nflows": __version__,
        "dataset": val_data.name,
        "preset": request.preset,
        "selected_on": "val",
        "objective": "best validation H: trained on the validation split (train_loc), scored on "
        "its validation classes (val_loc) at the val protocol's evaluation points",
        "scheduler": request.scheduler,
        "space": space,
        "space_source": source,
        "trials": trials,
        "best": {
            "trial_id": best["trial_id"],
            "config": best["config"],
            "validation_H": best["validation"]["best_H"],
            "full_config": configs["best"].to_dict(),
        },
        "preset_config": base.to_dict(),
        "test": test,
        "environment": environment(
            command=request.command,
            devices=[trial["device"] for trial in trials if trial["device"]],
            ray_version=api.version,
            cluster=cluster,
        ),
        "request": {k: v for k, v in asdict(request).items() if k != "space"},
        "storage": str(storage),
        "seconds": {
            "search": search_seconds,
            "final": final_seconds,
            "total": time.perf_counter() - started,
        },
    }


def search_phase(
    api: RayAPI,
    request: SweepRequest,
    space: Space,
    base: GSMFlowConfig,
    val_data: Any,
    data_root: str | None,
    storage: Path,
    resources: tuple[dict[str, float], int, str | None],
    callbacks: Sequence[Any] = (),
) -> list[dict[str, Any]]:
    """The search: ``request.trials`` validation trials as one Tune experiment.

    Reads only the validation split (``val_data``, and the trials' own
    ``split="val"`` loads). Returns the trial records of :func:`trial_record`.
    """
    tune = api.tune
    setup = SearchSetup(
        dataset=request.dataset,
        data_root=data_root,
        base_config=base.to_dict(),
        seed=request.seed,
        threads=resources[1],
        device=resources[2],
    )
    if request.scheduler == "asha":
        scheduler = _asha(api, base, space, val_data)
    else:
        from ray.tune.schedulers import FIFOScheduler

        scheduler = FIFOScheduler()
    job = Job(
        name="search",
        trainable=tune.with_parameters(search_trial, setup=setup),
        param_space=to_tune(space, tune),
        expected=request.trials,
        num_samples=request.trials,
        scheduler=scheduler,
        max_concurrent=request.max_concurrent,
        search_seed=request.seed,
        resources=resources[0],
        callbacks=callbacks,
    )
    results = run_job(api, job, storage, resume=request.resume)
    return [trial_record(result, list(space)) for result in results]


def format_sweep(result: dict[str, Any]) -> str:
    """A plain-text summary of :func:`run_sweep`'s result (accuracies in %).

    Example:
        >>> print(format_sweep(result))  # doctest: +SKIP
    """
    trials = result["trials"]
    states = {state: sum(t["state"] == state for t in trials) for state in
              ("completed", "stopped early", "error")}  # fmt: skip
    best = result["best"]
    values = ", ".join(f"{key}={_short(value)}" for key, value in best["config"].items())
    test = result["test"]
    seeds = test["seeds"]
    lines = [
        f"sweep of {result['dataset']} (preset {result['preset']}, {result['space_source']}): "
        f"{len(trials)} trials ({states['completed']} completed, {states['stopped early']} "
        f"stopped early by {result['scheduler']}, {states['error']} failed) in "
        f"{_minutes(result['seconds']['search'])}; selected on the validation split",
        f"best: trial {best['trial_id']}, validation H {100 * best['validation_H']:.1f}: {values}",
        "",
        f"protocol final on the test set, seeds {seeds[0]}..{seeds[-1]} ({len(seeds)}):",
        f"{'config':<10}" + "".join(f"{m:>16}" for m in METRICS),
    ]
    for name in ("best", "preset"):
        mean, std = test[name]["mean"], test[name]["std"]
        cells = "".join(f"{f'{100 * mean[m]:.1f} ± {100 * std[m]:.1f}':>16}" for m in METRICS)
        lines.append(f"{name:<10}{cells}")
    lines.append(f"total {_minutes(result['seconds']['total'])}; Tune state in {result['storage']}")
    return "\n".join(lines)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _minutes(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "-"
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes}m{rest:02d}s" if minutes else f"{rest}s"
