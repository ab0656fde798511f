"""``gsmflow bench``, ``train``, ``generate`` and ``evaluate``: parse, call the library, report."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO, TypeVar

import click
import numpy as np
import torch

from gsmflow_nflows.atomic_write import check_writable, check_writable_folder, write_with_fallback
from gsmflow_nflows.cli.main import debug_requested, error_line, main
from gsmflow_nflows.cli.run_log import log_dir_option, run_logging, with_log
from gsmflow_nflows.cli.table import format_table
from gsmflow_nflows.data import GZSLData, load_dataset
from gsmflow_nflows.errors import CheckpointError, GSMFlowError
from gsmflow_nflows.evaluation.protocols import (
    PROTOCOLS,
    ProtocolResult,
    evaluate_flow,
    per_class_table,
)
from gsmflow_nflows.experiment import (
    BenchRequest,
    environment,
    request_config,
    run_bench,
    seeds_from,
    semantic_for,
)
from gsmflow_nflows.model import generate_features
from gsmflow_nflows.run_plan import MANY_SEEDS, measure_costs, plan_bench, plan_train
from gsmflow_nflows.runtime import resolve_device
from gsmflow_nflows.training.config import ABLATIONS, GSMFlowConfig
from gsmflow_nflows.training.config_file import parse_override, read_config_file
from gsmflow_nflows.training.model_io import load_model, save_model
from gsmflow_nflows.training.presets import PRESET_KINDS, imbalance_warning, run_config
from gsmflow_nflows.training.trainer import GSMFlowTrainer

#: A decorated command function.
F = TypeVar("F", bound=Callable[..., Any])

#: The largest ``--seed``: torch takes up to 2**64 - 1; 32 bits also suit numpy-style seeds.
MAX_SEED = 2**32 - 1


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn a :class:`~gsmflow_nflows.errors.GSMFlowError` into one ``Error: ...`` line, exit 1.

    Nothing else is caught: any other exception is a bug and keeps its traceback
    (see :class:`~gsmflow_nflows.cli.main.GSMFlowGroup`). With ``gsmflow --debug``
    the error goes through to the group, which prints its traceback first.
    """
    try:
        yield
    except GSMFlowError as error:
        if debug_requested():
            raise
        raise click.ClickException(error_line(error)) from None


class ProgressLine:
    """Progress on stderr: one line redrawn in place (at most every 0.1 s) on a terminal;
    elsewhere (a file, a pipe) a new line per 10% of each stage and no carriage return.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.started: dict[str, float] = {}
        self.reported: dict[str, int] = {}
        self.done: dict[str, int] = {}
        self.drawn = 0.0

    def __call__(self, stage: str, done: int, total: int, losses: dict[str, float]) -> None:
        now = time.monotonic()
        if done <= self.done.get(stage, 0):  # the stage runs again (another flow, a resume)
            self.started.pop(stage, None)
            self.reported.pop(stage, None)
        self.done[stage] = done
        started = self.started.setdefault(stage, now)
        eta = (now - started) / max(done, 1) * (total - done)
        values = "  ".join(
            f"{k} {v:.3g}" if k != "lr" else f"lr {v:.1e}" for k, v in losses.items()
        )
        line = f"{stage:<18} {done:>6}/{total:<6} {values}  eta {eta:5.0f}s"
        if self.tty:
            if done < total and now - self.drawn < 0.1:
                return
            self.drawn = now
            end = "\n" if done >= total else ""
            self.stream.write("\r" + line.ljust(110) + end)
            self.stream.flush()
        else:
            tenth = (10 * done) // max(total, 1)
            if tenth > self.reported.get(stage, -1) or done >= total:
                self.reported[stage] = tenth
                self.stream.write(line + "\n")
                self.stream.flush()


def check_outputs(*files: Path | None, folder: Path | None = None) -> None:
    """Fail now, before any work, if an output file or the checkpoint ``folder`` cannot be written.

    Example:
        >>> check_outputs(Path("/dev/null"), folder=None)
    """
    with user_errors():
        for path in files:
            if path is not None:
                check_writable(path)
        if folder is not None:
            check_writable_folder(folder)


def available_devices() -> list[str]:
    """The devices ``--device`` accepts on this machine.

    Example:
        >>> available_devices()[0]
        'cpu'
    """
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += ["cuda", *(f"cuda:{index}" for index in range(torch.cuda.device_count()))]
    return devices


def _device(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """``--device``: one of :func:`available_devices` (``cpu:0`` is ``cpu``), or ``None``."""
    if value is None:
        return None
    available = available_devices()
    try:
        device = torch.device(value.strip())
    except (RuntimeError, TypeError, ValueError):
        device = None
    if device is not None and device.type == "cpu" and device.index in (None, 0):
        device = torch.device("cpu")
    if device is None or str(device) not in available:
        raise click.BadParameter(
            f"{value!r} is not a device available here; choose from {', '.join(available)}."
        )
    return str(device)


def check_resume(resume: bool, checkpoint_dir: Path | None) -> None:
    """``--resume`` needs to know where the interrupted run saved."""
    if resume and checkpoint_dir is None:
        raise click.UsageError("--resume needs --checkpoint-dir (where the interrupted run saved).")


def check_calibrate(calibrate: bool, protocol: str) -> None:
    """``--calibrate`` chooses its offset on the validation split: protocol final only."""
    if calibrate and protocol != "final":
        raise click.UsageError(
            f"--calibrate works with --protocol final only, not {protocol!r} "
            "(its offset is chosen on the validation split); drop one of them."
        )


def _ablations(value: str | None) -> tuple[str, ...]:
    if not value:
        return ()
    names = tuple(part.strip() for part in value.split(",") if part.strip())
    unknown = sorted(set(names) - set(ABLATIONS))
    if unknown:
        raise click.BadParameter(
            f"unknown component {', '.join(unknown)}; choose from {', '.join(ABLATIONS)}",
            param_hint="--ablate",
        )
    return names


dataset_option = click.option(
    "--dataset",
    required=True,
    help="apy, awa1, awa2, cub, sun, flo, the built-in digits or synthetic, "
    "or any folder name under --data-root.",
)
data_root_option = click.option(
    "--data-root",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder holding one sub-folder per dataset (default: $GSMFLOW_DATA or ~/.cache/gsmflow).",
)
semantic_option = click.option(
    "--semantic",
    default=None,
    metavar="KEY",
    help="Class vectors from <KEY>_splits.mat in the dataset folder: att (attributes), "
    "sent (CUB's sentence embeddings), ... Default: sent for CUB with --preset paper "
    "(as the paper), else att.",
)
preset_option = click.option(
    "--preset",
    type=click.Choice(PRESET_KINDS),
    default="default",
    show_default=True,
    help="'default': derived from the data's sizes; 'quick': a smaller model, a shorter run; "
    "'paper': the published hyperparameters (hours on a CPU); "
    "'smoke': seconds, for tests (meaningless numbers).",
)
device_option = click.option(
    "--device",
    default=None,
    callback=_device,
    help="cpu, cuda, cuda:N (default: cuda if available, else cpu).",
)
seed_range = click.IntRange(0, MAX_SEED)
ablate_option = click.option(
    "--ablate",
    default=None,
    help=f"Comma-separated components to switch off: {','.join(ABLATIONS)}.",
)
precision_option = click.option(
    "--precision",
    type=click.Choice(["fp32", "bf16"]),
    default="fp32",
    show_default=True,
    help="bf16 autocasts the flow's passes (training steps, feature generation) to "
    "bfloat16; weights, optimizer and classifiers stay float32.",
)
checkpoint_options = [
    click.option(
        "--checkpoint-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Save checkpoints here (every --checkpoint-every iterations and at the end).",
    ),
    click.option("--resume", is_flag=True, help="Continue interrupted runs from --checkpoint-dir."),
    click.option(
        "--checkpoint-every",
        type=click.IntRange(min=1),
        default=1000,
        show_default=True,
        help="Iterations between checkpoints (with --checkpoint-dir).",
    ),
    click.option(
        "--checkpoint-minutes",
        type=click.FloatRange(min=0),
        default=5.0,
        show_default=True,
        help="Also checkpoint once this much wall time has passed since the last one, "
        "so a killed run loses minutes (with --checkpoint-dir; 0: by iterations only).",
    ),
]


config_options = [
    click.option(
        "--config",
        "config_file",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="A JSON config (`gsmflow config` prints one) or a results JSON "
        "(`bench --output`): its config replaces the preset, replaying that run.",
    ),
    click.option(
        "--set",
        "settings",
        multiple=True,
        metavar="SECTION.FIELD=VALUE",
        help="Override one config field, e.g. --set training.lr=1e-3 (repeatable; "
        "applied after the preset or --config).",
    ),
]


def with_config(function: F) -> F:
    for option in reversed(config_options):
        function = option(function)
    return function


def config_sources(
    config_file: Path | None, settings: tuple[str, ...]
) -> tuple[dict[str, Any] | None, tuple[tuple[str, Any], ...]]:
    """``--config`` read and checked, ``--set`` parsed: ``(base, overrides)`` for ``run_config``."""
    base = read_config_file(config_file) if config_file is not None else None
    return base, tuple(parse_override(text) for text in settings)


def data_and_config(
    dataset: str,
    data_root: Path | None,
    preset: str,
    semantic: str | None,
    ablate: str | None,
    config_file: Path | None,
    settings: tuple[str, ...],
) -> tuple[GZSLData, GSMFlowConfig]:
    """The dataset (class vectors from :func:`semantic_for`) and the config a run on it uses:
    the preset or ``--config``, ``--ablate``, then ``--set`` (call it inside ``user_errors``)."""
    base, overrides = config_sources(config_file, settings)
    data = load_dataset(
        dataset, data_root=data_root, semantic=semantic_for(dataset, preset, semantic)
    )
    config = run_config(
        dataset, data, preset, _ablations(ablate), base=base, overrides=dict(overrides)
    )
    return data, config


def _seconds(checkpoint_minutes: float) -> float | None:
    """``--checkpoint-minutes`` as the trainers' ``checkpoint_seconds`` (0: ``None``, off)."""
    return 60.0 * checkpoint_minutes if checkpoint_minutes > 0 else None


def with_checkpoints(function: F) -> F:
    for option in reversed(checkpoint_options):
        function = option(function)
    return function


@main.command()
@dataset_option
@data_root_option
@preset_option
@semantic_option
@click.option(
    "--protocol",
    type=click.Choice(PROTOCOLS),
    default="final",
    show_default=True,
    help="final: fixed schedule, last epoch; val: chosen on validation classes; "
    "paper: best on the test set, as the authors (comparison only).",
)
@click.option("--seeds", "num_seeds", type=click.IntRange(min=1), default=1, show_default=True,
              help="Number of seeds: --seed, --seed+1, ...")  # fmt: skip
@click.option("--seed", type=seed_range, default=0, show_default=True, help="First seed.")
@device_option
@precision_option
@ablate_option
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the results as JSON here.")  # fmt: skip
@click.option("--no-baselines", "no_baselines", is_flag=True, default=False,
              help="Skip the baselines (ESZSL, linear-Gaussian, seen-only, chance).")  # fmt: skip
@click.option("--calibrate", is_flag=True,
              help="Also report calibrated stacking (seen-score offset chosen on the validation "
              "split; protocol final; trains one more flow).")  # fmt: skip
@click.option("--dry-run", is_flag=True,
              help="Print the plan (iterations, evaluations, generated features and their "
              "memory, a time estimate timed on this machine) and stop.")  # fmt: skip
@click.option("--yes", "many_seeds_ok", is_flag=True,
              help=f"Run more than {MANY_SEEDS} seeds (refused without it).")  # fmt: skip
@with_config
@with_checkpoints
@log_dir_option
def bench(
    dataset: str,
    data_root: Path | None,
    preset: str,
    semantic: str | None,
    protocol: str,
    num_seeds: int,
    seed: int,
    device: str | None,
    precision: str,
    ablate: str | None,
    output: Path | None,
    no_baselines: bool,
    calibrate: bool,
    dry_run: bool,
    many_seeds_ok: bool,
    config_file: Path | None,
    settings: tuple[str, ...],
    checkpoint_dir: Path | None,
    resume: bool,
    checkpoint_every: int,
    checkpoint_minutes: float,
    log_dir: Path | None,
) -> None:
    """Train, generate and evaluate GSMFlow on a dataset; print S, U, H, T1 over seeds.

    Simple baselines run beside it on the same split and seeds (ESZSL,
    linear-Gaussian features + the same classifier, seen-only, chance) unless
    --no-baselines. The plan (what will run, and an estimate of its time
    timed on this machine) comes first; --dry-run prints it and stops.
    """
    check_resume(resume, checkpoint_dir)
    check_calibrate(calibrate, protocol)
    if seed + num_seeds - 1 > MAX_SEED:
        raise click.BadParameter(
            f"--seed {seed} with --seeds {num_seeds} runs seeds up to {seed + num_seeds - 1}, "
            f"above {MAX_SEED}; lower --seed.",
            param_hint="--seeds",
        )
    check_outputs(output, folder=checkpoint_dir)
    check_outputs(folder=log_dir)
    with user_errors():
        base, overrides = config_sources(config_file, settings)
    request = BenchRequest(
        dataset=dataset,
        data_root=str(data_root) if data_root else None,
        preset=preset,
        protocol=protocol,
        seeds=seeds_from(seed, num_seeds),
        device=device,
        precision=precision,
        ablate=_ablations(ablate),
        checkpoint_dir=str(checkpoint_dir) if checkpoint_dir else None,
        resume=resume,
        baselines=not no_baselines,
        calibrate=calibrate,
        config=base,
        overrides=overrides,
        command=tuple(sys.argv),
        semantic=semantic,
        checkpoint_every=checkpoint_every,
        checkpoint_seconds=_seconds(checkpoint_minutes),
    )
    with user_errors():
        vectors = semantic_for(dataset, preset, semantic)
        data = load_dataset(dataset, data_root=data_root, semantic=vectors)
        config = request_config(request, data)
        val_data = None
        if protocol == "val" or calibrate:
            val_data = load_dataset(dataset, data_root=data_root, split="val", semantic=vectors)
        costs = measure_costs(config, data, device=device, precision=precision)
        plan = plan_bench(request, data, config, val_data=val_data, costs=costs)
    click.echo("\n".join(plan.lines()), err=not dry_run)
    if dry_run:
        return
    if num_seeds > MANY_SEEDS and not many_seeds_ok:
        raise click.UsageError(
            f"--seeds {num_seeds} runs {num_seeds} trainings ({plan.estimate()}); pass --yes "
            f"to run more than {MANY_SEEDS} seeds, or --dry-run to see the plan."
        )
    with user_errors(), run_logging(log_dir, resume=resume) as log:
        warning = imbalance_warning(config, data)
        if warning:
            click.echo(f"warning: {warning}", err=True)
        result = run_bench(
            request,
            progress=with_log(ProgressLine(), log),
            progress_every=10 if log is None else 1,
            on_evaluation=None if log is None else log.evaluation,
        )
    click.echo(format_table(result))
    if output is not None:
        with user_errors():
            write_with_fallback(output, json.dumps(result.to_dict(), indent=2) + "\n")
        click.echo(f"wrote {output}")


@main.command()
@dataset_option
@data_root_option
@preset_option
@semantic_option
@click.option("--seed", type=seed_range, default=0, show_default=True)
@device_option
@precision_option
@ablate_option
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Model file to write (weights + config).")  # fmt: skip
@click.option("--dry-run", is_flag=True,
              help="Print the plan (iterations, a time estimate timed on this machine) "
              "and stop.")  # fmt: skip
@with_config
@with_checkpoints
@log_dir_option
def train(
    dataset: str,
    data_root: Path | None,
    preset: str,
    semantic: str | None,
    seed: int,
    device: str | None,
    precision: str,
    ablate: str | None,
    output: Path,
    dry_run: bool,
    config_file: Path | None,
    settings: tuple[str, ...],
    checkpoint_dir: Path | None,
    resume: bool,
    checkpoint_every: int,
    checkpoint_minutes: float,
    log_dir: Path | None,
) -> None:
    """Train GSMFlow on a dataset's trainval split and save the model.

    With the same dataset, preset (or --config), --set and --seed,
    `gsmflow evaluate MODEL` then gives the numbers of
    `gsmflow bench --protocol final --seed S` exactly.
    """
    check_resume(resume, checkpoint_dir)
    path = checkpoint_dir / f"train-seed{seed}.pt" if checkpoint_dir else None
    check_outputs(output, path if path and path.exists() else None, folder=checkpoint_dir)
    check_outputs(folder=log_dir)
    with user_errors():
        data, config = data_and_config(
            dataset, data_root, preset, semantic, ablate, config_file, settings
        )
        config = config.with_seed(seed)
        costs = measure_costs(config, data, device=device, precision=precision)
        plan = plan_train(
            config, data, preset=preset, seed=seed, device=device, precision=precision, costs=costs
        )
    click.echo("\n".join(plan.lines()), err=not dry_run)
    if dry_run:
        return
    with user_errors(), run_logging(log_dir, seed=seed, resume=resume) as log:
        trainer = GSMFlowTrainer(
            config,
            data,
            device=device,
            precision=precision,
            checkpoint_path=path,
            checkpoint_every=checkpoint_every,
            checkpoint_seconds=_seconds(checkpoint_minutes),
        )
        flow = trainer.fit(
            resume=resume,
            progress=with_log(ProgressLine(), log),
            progress_every=10 if log is None else 1,
        )
        save_model(output, flow, config, data, fallback=True)
    click.echo(f"wrote {output} ({data.name}, {trainer.total_iterations} iterations, seed {seed})")


@main.command()
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The .npz file to write.")  # fmt: skip
@click.option("--num-per-class", type=click.IntRange(min=1), default=None,
              help="Features per unseen class (default: the model's preset).")  # fmt: skip
@click.option("--seed", type=seed_range, default=0, show_default=True)
@device_option
def generate(
    model: Path, output: Path, num_per_class: int | None, seed: int, device: str | None
) -> None:
    """Generate features for the unseen classes of a saved MODEL into an .npz file.

    The file holds ``features`` [N, D] (in the loader's min-max-scaled units),
    ``labels`` [N] (0..U-1), ``class_ids`` [U] (the dataset's original 0-based class
    ids of those labels) and ``class_names`` [U]; with a model of scaled features also
    ``feature_shift`` and ``feature_scale`` [D]: the original units are
    ``features * feature_scale + feature_shift``.
    """
    check_outputs(output)
    with user_errors():
        resolved = resolve_device(device)
        flow, config, meta = load_model(model, device=resolved)
        count = num_per_class or config.evaluation.samples_per_class
        features, labels = generate_features(
            flow,
            meta["unseen_embeddings"].to(resolved),
            count,
            generator=torch.Generator(device=resolved).manual_seed(seed),
        )

        arrays = {
            "features": features.cpu().numpy(),
            "labels": labels.cpu().numpy(),
            "class_ids": meta["unseen_classes"].numpy(),
        }
        if "class_names" in meta:  # models saved before the names were recorded lack them
            names = [meta["class_names"][i] for i in meta["unseen_classes"].tolist()]
            arrays["class_names"] = np.array(names, dtype=str)
        for key in ("feature_shift", "feature_scale"):
            if key in meta:
                arrays[key] = meta[key].numpy()
        write_with_fallback(output, lambda stream: np.savez(stream, **arrays))
    click.echo(f"wrote {output}: {features.shape[0]} features ({count} per unseen class)")


@main.command()
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@dataset_option
@data_root_option
@click.option("--semantic", default="att", show_default=True, metavar="KEY",
              help="Class vectors from <KEY>_splits.mat, as in training.")  # fmt: skip
@device_option
@precision_option
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the result as JSON here (the shape of one bench run).")  # fmt: skip
def evaluate(
    model: Path,
    dataset: str,
    data_root: Path | None,
    semantic: str,
    device: str | None,
    precision: str,
    output: Path | None,
) -> None:
    """Evaluate a saved MODEL on a dataset's test sets (protocol final: one evaluation, last
    classifier epoch), with the random streams of `gsmflow bench --protocol final`: a model from
    `gsmflow train --seed S` scores exactly what the bench scores for seed S.
    """
    check_outputs(output)
    with user_errors():
        resolved = resolve_device(device)
        flow, config, meta = load_model(model, device=resolved)
        data = load_dataset(dataset, data_root=data_root, semantic=semantic).to(resolved)
        _check_model_matches(meta, data)
        # The bench's final protocol evaluates at the schedule's last iteration, which also
        # seeds its generation and classifier streams.
        iteration = config.training.iterations(data.num_train)
        started = time.perf_counter()
        record = evaluate_flow(
            flow, data, config, iteration, last_epoch_only=True, precision=precision
        )
    last: dict[str, Any] = record["gzsl"][-1]
    click.echo(
        f"{data.name} (protocol final, one evaluation): S {100 * last['S']:.1f}  "
        f"U {100 * last['U']:.1f}  H {100 * last['H']:.1f}  T1 {100 * record['zsl_t1'][-1]:.1f}"
    )
    if output is not None:
        run = ProtocolResult(
            protocol="final",
            seed=config.seed,
            S=last["S"],
            U=last["U"],
            H=last["H"],
            T1=record["zsl_t1"][-1],
            iteration=iteration,
            classifier_epoch=record["gzsl_epochs"],
            t1_iteration=iteration,
            t1_epoch=record["zsl_epochs"],
            seconds=time.perf_counter() - started,
            evaluations=[record],
            per_class=per_class_table(data, last),
        )
        result = {
            "model": str(model),
            "dataset": data.name,
            "semantic": semantic,
            "config": config.to_dict(),
            "runs": [run.to_dict()],
            "environment": environment(resolved, tuple(sys.argv)),
        }
        with user_errors():
            write_with_fallback(output, json.dumps(result, indent=2) + "\n")
        click.echo(f"wrote {output}")


@main.command("config")
@dataset_option
@data_root_option
@preset_option
@semantic_option
@ablate_option
@click.option("--seed", type=seed_range, default=None, help="Set the config's seed.")
@with_config
def print_config(
    dataset: str,
    data_root: Path | None,
    preset: str,
    semantic: str | None,
    ablate: str | None,
    seed: int | None,
    config_file: Path | None,
    settings: tuple[str, ...],
) -> None:
    """Print the config a run on DATASET would use, as JSON (give it back with --config).

    The data-derived presets read the dataset's sizes, so the dataset is loaded.
    """
    with user_errors():
        _, config = data_and_config(
            dataset, data_root, preset, semantic, ablate, config_file, settings
        )
        if seed is not None:
            config = config.with_seed(seed)
    click.echo(json.dumps(config.to_dict(), indent=2))


def _check_model_matches(meta: dict[str, Any], data: GZSLData) -> None:
    same = meta["feature_dim"] == data.feature_dim and all(
        torch.equal(meta[key], getattr(data, key))
        for key in ("seen_classes", "unseen_classes", "seen_embeddings", "unseen_embeddings")
    )
    if not same:
        raise CheckpointError(
            f"the model was trained on {meta['dataset']} ({meta['feature_dim']}-d features), "
            f"not on {data.name} ({data.feature_dim}-d features, other classes or class "
            "vectors); evaluate it on its own dataset."
        )
