"""The ``gsmflow`` Click group. Commands register themselves from sibling modules."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import click

from gsmflow_nflows import __version__

#: The exit status of a command stopped by SIGTERM (128 + the signal's number, as shells do).
TERMINATED_STATUS = 128 + signal.SIGTERM


@contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """While the block runs, SIGTERM raises ``SystemExit(143)`` instead of killing the process.

    So ``finally`` blocks run: a write in progress removes its temporary file.
    An ``Error:`` line goes to stderr first.
    The previous handler comes back afterwards; outside the main thread
    (where handlers cannot be set) nothing changes.

    Example:
        >>> with sigterm_as_exit():
        ...     pass
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, frame: object) -> None:
        try:  # os.write, not click.echo: the signal may arrive in the middle of a print
            os.write(2, b"Error: terminated by SIGTERM.\n")
        except OSError:
            pass
        raise SystemExit(TERMINATED_STATUS)

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gsmflow")
@click.pass_context
def main(ctx: click.Context) -> None:
    """GSMFlow for generalized zero-shot learning: download data, train, benchmark."""
    ctx.with_resource(sigterm_as_exit())
