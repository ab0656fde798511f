"""``gsmflow download`` and ``gsmflow datasets``: thin wrappers over ``gsmflow_nflows.data``."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

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


def _no_steps() -> Iterator[int]:
    """Steps of unknown number (a generator has no length): a bar without an end."""
    yield from ()


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f}"


class DownloadBar:
    """Download progress on stderr, drawn by ``click.progressbar``.

    On a terminal: a bar redrawn in place (at most every 0.1 s) with the MiB
    received, the rate and, once known, the time left. Elsewhere (a file, a
    pipe): one line when the transfer starts and one when it ends, and no
    carriage return. A resumed transfer's rate and time left count only the
    bytes received in this run.

    Example:
        >>> bar = DownloadBar("apy")
        >>> bar.close()  # nothing was downloaded: prints nothing
    """

    def __init__(self, name: str, stream: TextIO | None = None) -> None:
        self.name = name
        self.stream = stream if stream is not None else sys.stderr
        self.bar: Any = None  # a click ProgressBar once the transfer starts
        self.first = self.position = self.total = 0
        self.started = self.drawn = 0.0

    def _rate(self) -> float:
        """MiB/s received in this run."""
        seconds = max(time.monotonic() - self.started, 1e-9)
        return (self.position - self.first) / 2**20 / seconds

    def _info(self, done: int | None) -> str:
        size = f"{_mib(self.position)}/{_mib(self.total)}" if self.total else _mib(self.position)
        return f"{size} MiB  {self._rate():.1f} MiB/s"

    def __call__(self, done: int, total: int | None) -> None:
        now = time.monotonic()
        if self.bar is None:
            self.first = self.position = done
            self.total, self.started = total or 0, now
            size = f"{_mib(total)} MiB" if total else "size unknown"
            resumed = f", resuming at {_mib(done)} MiB" if done else ""
            self.bar = click.progressbar(
                length=total - done if total else None,
                iterable=None if total else _no_steps(),
                label=f"{self.name}: downloading ({size}{resumed})",
                file=self.stream,
                show_percent=bool(total),
                item_show_func=self._info,
            )
            self.bar.__enter__()
            self.drawn = now
            return
        if now - self.drawn < 0.1 and not (total and done >= total):
            self.position = done  # drawn with the next update
            return
        self.drawn = now
        steps, self.position = done - self.bar.pos - self.first, done
        self.bar.update(steps, done)

    def close(self) -> None:
        """End the bar's line and say how much came, in how long; nothing if nothing started."""
        if self.bar is None:
            return
        if self.position - self.first - self.bar.pos > 0:
            self.bar.update(self.position - self.first - self.bar.pos, self.position)
        self.bar.__exit__(None, None, None)
        seconds = time.monotonic() - self.started
        complete = not self.total or self.position >= self.total
        what = "downloaded" if complete else "stopped after"
        of = f" of {_mib(self.total)}" if self.total and not complete else ""
        click.echo(
            f"{self.name}: {what} {_mib(self.position)}{of} MiB in {seconds:.1f} s "
            f"({self._rate():.1f} MiB/s)",
            file=self.stream,
        )
        self.bar = None


_ROOT_HELP = "Data root (default: $GSMFLOW_DATA or ~/.cache/gsmflow); --root is the old name."
data_root_option = click.option(
    "--data-root", "--root", "data_root", type=click.Path(file_okay=False, path_type=Path),
    help=_ROOT_HELP,
)  # fmt: skip


@main.command()
@click.argument("dataset")
@data_root_option
@click.option("--url", help="Download from this URL instead of the official archive.")
@click.option("--force", is_flag=True, help="Replace the dataset folder if it exists.")
def download(dataset: str, data_root: Path | None, url: str | None, force: bool) -> None:
    """Download DATASET (apy, awa1, awa2, cub, sun, flo) into the data root."""
    bar = DownloadBar(dataset.lower())
    try:  # a DatasetError becomes one Error: line in the group (GSMFlowGroup)
        folder = download_dataset(dataset, root=data_root, url=url, progress=bar, force=force)
    finally:
        bar.close()
    click.echo(f"{dataset.lower()}: ready in {folder}")


@main.command()
@data_root_option
def datasets(data_root: Path | None) -> None:
    """List known datasets, their expected statistics and whether each is valid locally."""
    root = data_root if data_root is not None else default_data_root()
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
