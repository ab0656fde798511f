"""``gsmflow download`` and ``gsmflow datasets``: thin wrappers over ``gsmflow_nflows.data``."""

from __future__ import annotations

import time
from pathlib import Path

import click

from gsmflow_nflows.cli.main import main
from gsmflow_nflows.data import (
    DIGITS_INFO,
    KNOWN_DATASETS,
    SYNTHETIC_INFO,
    dataset_status,
    default_data_root,
    download_dataset,
)


class _StderrBar:
    """A one-line progress bar on stderr, redrawn at most every 0.1 s."""

    def __init__(self) -> None:
        self._last = 0.0
        self._drawn = False

    def __call__(self, done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - self._last < 0.1 and (total is None or done < total):
            return
        self._last = now
        mib = done / 2**20
        if total:
            filled = int(30 * done / total)
            line = f"\r[{'#' * filled}{'.' * (30 - filled)}] {mib:8.1f} / {total / 2**20:.1f} MiB"
        else:
            line = f"\r{mib:8.1f} MiB"
        click.echo(line, err=True, nl=False)
        self._drawn = True

    def close(self) -> None:
        if self._drawn:
            click.echo("", err=True)


_ROOT_HELP = "Data root (default: $GSMFLOW_DATA or ~/.cache/gsmflow)."


@main.command()
@click.argument("dataset")
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), help=_ROOT_HELP)
@click.option("--url", help="Download from this URL instead of the official archive.")
@click.option("--force", is_flag=True, help="Replace the dataset folder if it exists.")
def download(dataset: str, root: Path | None, url: str | None, force: bool) -> None:
    """Download DATASET (apy, awa1, awa2, cub, sun, flo) into the data root."""
    bar = _StderrBar()
    try:  # a DatasetError becomes one Error: line in the group (GSMFlowGroup)
        folder = download_dataset(dataset, root=root, url=url, progress=bar, force=force)
    finally:
        bar.close()
    click.echo(f"{dataset.lower()}: ready in {folder}")


@main.command()
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), help=_ROOT_HELP)
def datasets(root: Path | None) -> None:
    """List known datasets, their expected statistics and whether each is valid locally."""
    root = root if root is not None else default_data_root()
    header: tuple[str, ...] = (
        "name",
        "classes",
        "seen/unseen",
        "A",
        "images",
        "trainval",
        "test S",
        "test U",
    )
    rows = []
    built_in = (SYNTHETIC_INFO, DIGITS_INFO)
    listed = [*KNOWN_DATASETS.values(), *built_in]
    for info in listed:
        if info in built_in:
            state, detail = "on demand", "generated on first use"
        else:
            state, detail = dataset_status(info, root)
        rows.append(
            (
                info.name,
                str(info.num_classes),
                f"{info.num_seen}/{info.num_unseen}",
                str(info.attribute_dim),
                str(info.num_images),
                str(info.num_trainval),
                str(info.num_test_seen),
                str(info.num_test_unseen),
                state if state != "invalid" else f"invalid: {detail}",
            )
        )
    header = (*header, "local")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]

    def fmt(row: tuple[str, ...]) -> str:
        cells = [
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row[:-1], widths, strict=True))
        ]
        return "  ".join([*cells, row[-1]])

    click.echo(f"data root: {root}")
    click.echo(fmt(header))
    for row in rows:
        click.echo(fmt(row))
    for info in listed:
        if info.note:
            click.echo(f"note {info.name}: {info.note}")
