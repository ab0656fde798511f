"""One-shot Tune trials that run a whole protocol for one seed (the test-set phases).

* :func:`final_trial`: after the search, the chosen config or the preset's,
  retrained on trainval and tested once (protocol ``final``);
* :func:`table_trial`: one cell of ``gsmflow table`` (``gsmflow bench`` for one seed).

Each reports one result, ``record``: the run's dict as a JSON string. Their runs
checkpoint with the project's own mechanism (``run_protocol``'s ``checkpoint_dir``
with ``resume``), so a trial restarted after an interruption continues.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gsmflow_nflows.sweep.adapter import bench_seed, final_run
from gsmflow_nflows.training.config import GSMFlowConfig


@dataclass(frozen=True)
class FinalSetup:
    """The configs of the test phase by name (``best``, ``preset``) and where they run."""

    dataset: str
    data_root: str | None
    configs: dict[str, dict[str, Any]]
    checkpoint_root: str | None = None
    threads: int = 1
    device: str | None = "cpu"


@dataclass(frozen=True)
class TableSetup:
    """What every ``gsmflow table`` cell shares."""

    data_root: str | None
    baselines: bool = True
    checkpoint_root: str | None = None
    threads: int = 1
    device: str | None = "cpu"


def _report(metrics: dict[str, Any]) -> None:
    from gsmflow_nflows.sweep.tune_api import require_ray

    require_ray().report(metrics)


def _folder(root: str | None, name: str) -> Path | None:
    return Path(root) / name if root is not None else None


def final_trial(params: dict[str, Any], setup: FinalSetup) -> None:
    """Tune trainable: ``params = {"config": "best" | "preset", "seed": int}``.

    Example:
        >>> tune.with_parameters(final_trial, setup=setup)  # doctest: +SKIP
    """
    torch.set_num_threads(max(1, setup.threads))
    name, seed = params["config"], int(params["seed"])
    config = GSMFlowConfig.from_dict(setup.configs[name]).with_seed(seed)
    run = final_run(
        config,
        setup.dataset,
        setup.data_root,
        checkpoint_dir=_folder(setup.checkpoint_root, f"final-{name}"),
        device=setup.device,
    )
    _report({"H": run["H"], "record": json.dumps(run)})


def table_trial(params: dict[str, Any], setup: TableSetup) -> None:
    """Tune trainable: ``params = {"cell": {"dataset", "preset", "protocol", "seed"}}``.

    Example:
        >>> tune.with_parameters(table_trial, setup=setup)  # doctest: +SKIP
    """
    torch.set_num_threads(max(1, setup.threads))
    cell = params["cell"]
    dataset, preset, protocol = cell["dataset"], cell["preset"], cell["protocol"]
    result = bench_seed(
        dataset,
        setup.data_root,
        preset,
        protocol,
        int(cell["seed"]),
        baselines=setup.baselines,
        checkpoint_dir=_folder(setup.checkpoint_root, f"{dataset}-{preset}".lower()),
        device=setup.device,
    )
    _report({"H": result["mean"]["H"], "record": json.dumps(result)})
