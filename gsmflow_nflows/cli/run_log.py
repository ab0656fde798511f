"""``--log-dir`` of ``gsmflow bench`` and ``train``: CSV (and TensorBoard) logs of a run."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from gsmflow_nflows.run_log import TENSORBOARD_EXTRA, RunLog, tensorboard_available
from gsmflow_nflows.training.trainer import ProgressFn

#: Printed on stderr when ``--log-dir`` is given and the tensorboard package is missing.
TENSORBOARD_NOTE = (
    f"note: --log-dir writes CSV files only; TensorBoard files too with {TENSORBOARD_EXTRA}"
)

log_dir_option = click.option(
    "--log-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Log every iteration's losses and learning rate (flow.csv), every evaluation "
    "(evaluations.csv) and the mining stages (mining.csv) here as the run goes; with "
    "--resume, appended without repeating rows. TensorBoard files too when tensorboard "
    "is installed.",
)


@contextmanager
def run_logging(
    log_dir: Path | None, *, seed: int = 0, resume: bool = False
) -> Iterator[RunLog | None]:
    """The run's :class:`~gsmflow_nflows.run_log.RunLog` in ``log_dir``, or ``None`` without one.

    Example:
        >>> with run_logging(None) as log:
        ...     log is None
        True
    """
    if log_dir is None:
        yield None
        return
    tensorboard = tensorboard_available()
    if not tensorboard:
        click.echo(TENSORBOARD_NOTE, err=True)
    with RunLog(log_dir, seed=seed, resume=resume, tensorboard=tensorboard) as log:
        yield log


def with_log(progress: ProgressFn, log: RunLog | None) -> ProgressFn:
    """``progress``, and ``log`` after it when there is one.

    Example:
        >>> calls = []
        >>> with_log(lambda *a: calls.append(a), None)("flow", 1, 2, {})
        >>> calls
        [('flow', 1, 2, {})]
    """
    if log is None:
        return progress

    def both(stage: str, done: int, total: int, losses: dict[str, float]) -> None:
        progress(stage, done, total, losses)
        log(stage, done, total, losses)

    return both
