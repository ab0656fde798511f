"""``gsmflow plot``: a t-SNE of a model's generated unseen features, or a run log's curves."""

from __future__ import annotations

from pathlib import Path

import click

from gsmflow_nflows.cli.main import main
from gsmflow_nflows.cli.run import (
    _check_model_matches,
    check_outputs,
    data_root_option,
    device_option,
    seed_range,
    user_errors,
)
from gsmflow_nflows.data import load_dataset
from gsmflow_nflows.plots import (
    draw_curves,
    draw_tsne,
    embed_tsne,
    save_png,
    unseen_tsne_points,
)
from gsmflow_nflows.run_log import read_run_log
from gsmflow_nflows.runtime import resolve_device
from gsmflow_nflows.training.model_io import load_model


@main.command()
@click.argument("model", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--dataset", default=None, help="The dataset MODEL was trained on (with MODEL).")
@data_root_option
@click.option("--log-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Plot the losses and S/U/H curves a run logged here (--log-dir of "
              "bench or train).")  # fmt: skip
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The PNG file to write.")  # fmt: skip
@click.option("--per-class", type=click.IntRange(min=1), default=200, show_default=True,
              help="t-SNE: at most this many real, and as many generated, features "
              "per class.")  # fmt: skip
@click.option("--max-classes", type=click.IntRange(min=1), default=10, show_default=True,
              help="t-SNE: the first this many unseen classes (by class id).")  # fmt: skip
@click.option("--seed", type=seed_range, default=0, show_default=True,
              help="Seeds the generation, the subsampling and the t-SNE.")  # fmt: skip
@device_option
def plot(
    model: Path | None,
    dataset: str | None,
    data_root: Path | None,
    log_dir: Path | None,
    output: Path,
    per_class: int,
    max_classes: int,
    seed: int,
    device: str | None,
) -> None:
    """Draw a PNG: a t-SNE of MODEL's generated unseen features beside the real ones
    (MODEL --dataset NAME), or a run's training curves (--log-dir DIR).

    Needs matplotlib: pip install "gsmflow-nflows[plot]".
    """
    if (model is None) == (log_dir is None):
        raise click.UsageError("give a MODEL (with --dataset) or --log-dir, not both or neither.")
    if model is not None and dataset is None:
        raise click.UsageError("a t-SNE of MODEL needs --dataset (the data it was trained on).")
    check_outputs(output)
    with user_errors():
        if log_dir is not None:
            tables = read_run_log(log_dir)
            save_png(draw_curves(tables, title=str(log_dir)), output)
            evaluations = {(r["seed"], r["split"], r["iteration"]) for r in tables.evaluations}
            summary = f"{len(tables.flow)} flow iterations, {len(evaluations)} evaluations"
        else:
            assert model is not None and dataset is not None  # checked above
            resolved = resolve_device(device)
            flow, _, meta = load_model(model, device=resolved)
            data = load_dataset(dataset, data_root=data_root)
            _check_model_matches(meta, data)
            points = unseen_tsne_points(
                flow, data, per_class=per_class, max_classes=max_classes, seed=seed
            )
            title = f"{data.name}: unseen test features, real (dots) and generated (crosses)"
            save_png(draw_tsne(points, embed_tsne(points, seed=seed), title=title), output)
            real = int((~points.generated).sum())
            summary = (
                f"t-SNE of {len(points.class_names)} unseen classes: {real} real, "
                f"{int(points.generated.sum())} generated features"
            )
    click.echo(f"wrote {output} ({summary})")
