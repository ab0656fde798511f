"""``gsmflow sweep`` and ``gsmflow table``: Ray Tune jobs (Ray is the optional ``sweep`` extra).

Nothing here imports Ray; :func:`gsmflow_nflows.sweep.tune_api.require_ray` does,
when a command runs, and says which extra to install when it is missing.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from gsmflow_nflows.atomic_write import write_with_fallback
from gsmflow_nflows.cli.main import main
from gsmflow_nflows.cli.run import (
    check_outputs,
    data_root_option,
    dataset_option,
    preset_option,
    seed_range,
    user_errors,
)
from gsmflow_nflows.sweep.run import SCHEDULERS
from gsmflow_nflows.sweep.space import load_space

#: A decorated command function.
F = TypeVar("F", bound=Callable[..., Any])

#: Tune's console output, quietened: the commands print one line per evaluation instead.
QUIET_TUNE = {
    "RAY_AIR_NEW_OUTPUT": "0",
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
}


def _quiet_tune() -> None:
    for name, value in QUIET_TUNE.items():
        os.environ.setdefault(name, value)


def _command_line() -> str:
    return shlex.join(["gsmflow", *sys.argv[1:]])


def _storage(storage: Path | None, output: Path) -> Path:
    """``--storage``, else a folder beside the output: ``results.json`` -> ``results.tune``."""
    return storage if storage is not None else output.with_suffix(".tune")


ray_options = [
    click.option("--address", default=None,
                 help="A running Ray cluster (HEAD:6379); default: a local Ray with this "
                 "machine's CPUs."),
    click.option("--cpus-per-trial", type=click.FloatRange(min=0, min_open=True), default=1.0,
                 show_default=True, help="CPUs a trial holds (also its torch threads)."),
    click.option("--gpus-per-trial", type=click.FloatRange(min=0), default=0.0,
                 show_default=True, help="GPUs a trial holds; > 0 trains on CUDA."),
    click.option("--max-concurrent", type=click.IntRange(min=1), default=None,
                 help="At most this many trials at once (default: as resources allow)."),
    click.option("--storage", type=click.Path(file_okay=False, path_type=Path), default=None,
                 help="Folder of the Tune experiments (default: OUTPUT with suffix .tune); "
                 "on a cluster, a folder every node sees."),
    click.option("--resume", is_flag=True,
                 help="Continue the interrupted run in --storage: finished trials are kept, "
                 "unfinished ones continue from their checkpoints."),
]  # fmt: skip


def with_ray_options(function: F) -> F:
    for option in reversed(ray_options):
        function = option(function)
    return function


@main.command()
@dataset_option
@data_root_option
@preset_option
@click.option("--space", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help='JSON file: {"section.field": {"loguniform": [a, b]}, ...}; domains '
              "uniform, loguniform, randint (both ends included), choice. Default: the "
              "preset's learning rate, run length, generated features per unseen class "
              "and classifier rate.")  # fmt: skip
@click.option("--trials", type=click.IntRange(min=1), required=True,
              help="Configs to draw from the space.")  # fmt: skip
@click.option("--seeds", "num_seeds", type=click.IntRange(min=1), default=1, show_default=True,
              help="Seeds of the final test runs: --seed, --seed+1, ...")  # fmt: skip
@click.option("--seed", type=seed_range, default=0, show_default=True,
              help="The search's seed (and the first test seed).")  # fmt: skip
@click.option("--scheduler", type=click.Choice(SCHEDULERS), default="asha", show_default=True,
              help="asha stops trials whose validation H lags at the evaluation points; "
              "fifo runs every trial to the end.")  # fmt: skip
@with_ray_options
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Write the results as JSON here.")  # fmt: skip
def sweep(
    dataset: str,
    data_root: Path | None,
    preset: str,
    space: Path | None,
    trials: int,
    num_seeds: int,
    seed: int,
    scheduler: str,
    address: str | None,
    cpus_per_trial: float,
    gpus_per_trial: float,
    max_concurrent: int | None,
    storage: Path | None,
    resume: bool,
    output: Path,
) -> None:
    """Search hyperparameters on the validation split with Ray Tune, then test the best.

    Trials train on the validation split (train_loc, val_loc classes as unseen)
    and are scored by validation H; the test split is never read during the
    search. The best config and the preset's own are then retrained on trainval
    and tested once (protocol final) over --seeds seeds.
    """
    from gsmflow_nflows.sweep.run import SweepRequest, format_sweep, run_sweep

    check_outputs(output)
    with user_errors():
        parsed = load_space(space) if space is not None else None
        request = SweepRequest(
            dataset=dataset,
            trials=trials,
            storage=str(_storage(storage, output)),
            data_root=str(data_root) if data_root is not None else None,
            preset=preset,
            space=parsed,
            space_source=str(space) if space is not None else "default",
            seeds=num_seeds,
            seed=seed,
            scheduler=scheduler,
            address=address,
            cpus_per_trial=cpus_per_trial,
            gpus_per_trial=gpus_per_trial,
            max_concurrent=max_concurrent,
            resume=resume,
            command=_command_line(),
        )
        _quiet_tune()
        result = run_sweep(request)
    click.echo(format_sweep(result))
    with user_errors():
        write_with_fallback(output, json.dumps(result, indent=2) + "\n")
    click.echo(f"wrote {output}")


def _names(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


@main.command()
@click.option("--datasets", required=True, help="Comma-separated dataset names.")
@data_root_option
@click.option("--presets", default="default", show_default=True, help="Comma-separated presets.")
@click.option("--protocols", default="final", show_default=True,
              help="Comma-separated protocols (final, val, paper).")  # fmt: skip
@click.option("--seeds", "num_seeds", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--seed", type=seed_range, default=0, show_default=True, help="First seed.")
@click.option("--no-baselines", "no_baselines", is_flag=True, help="Skip the baselines.")
@with_ray_options
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Write the rows as JSON here (as benchmarks/accuracy.py --json).")  # fmt: skip
@click.option("--markdown", "markdown_file", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Also write the Markdown table here.")  # fmt: skip
def table(
    datasets: str,
    data_root: Path | None,
    presets: str,
    protocols: str,
    num_seeds: int,
    seed: int,
    no_baselines: bool,
    address: str | None,
    cpus_per_trial: float,
    gpus_per_trial: float,
    max_concurrent: int | None,
    storage: Path | None,
    resume: bool,
    output: Path,
    markdown_file: Path | None,
) -> None:
    """The accuracy table (datasets x presets x protocols x seeds) as one Ray Tune job.

    Each trial is `gsmflow bench` for one seed; rows are gathered as
    benchmarks/accuracy.py gathers them (JSON and Markdown).
    """
    from gsmflow_nflows.sweep.grid import TableRequest, run_table

    check_outputs(output, markdown_file)
    with user_errors():
        request = TableRequest(
            datasets=_names(datasets),
            storage=str(_storage(storage, output)),
            presets=_names(presets),
            protocols=_names(protocols),
            seeds=num_seeds,
            seed=seed,
            data_root=str(data_root) if data_root is not None else None,
            baselines=not no_baselines,
            address=address,
            cpus_per_trial=cpus_per_trial,
            gpus_per_trial=gpus_per_trial,
            max_concurrent=max_concurrent,
            resume=resume,
            command=_command_line(),
        )
        _quiet_tune()
        result = run_table(request)
    click.echo(result["markdown"])
    with user_errors():
        write_with_fallback(output, json.dumps(result["results"], indent=2) + "\n")
        if markdown_file is not None:
            write_with_fallback(markdown_file, result["markdown"])
    click.echo(f"wrote {output}" + (f" and {markdown_file}" if markdown_file else ""))
