"""The ``gsmflow`` Click group. Commands register themselves from sibling modules.

Errors: a :class:`~gsmflow_nflows.errors.GSMFlowError` (a problem the user can fix)
is printed as one ``Error: ...`` line, exit status 1; with ``gsmflow --debug`` its
traceback comes first. Any other exception is a bug: a line saying so goes to
stderr and the exception propagates with its traceback.
"""

from __future__ import annotations

import os
import signal
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from gsmflow_nflows import __version__
from gsmflow_nflows.errors import GSMFlowError

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


#: Printed on stderr before the traceback of an exception that is not a ``GSMFlowError``.
INTERNAL_ERROR = (
    "Internal error: a bug in gsmflow-nflows, not a problem with your input; "
    "please report it with the command and the traceback below."
)


def error_line(error: BaseException) -> str:
    """The one line a user error is shown as: its message's first line (or its repr).

    Example:
        >>> error_line(ValueError("first\\nsecond"))
        'first'
    """
    text = str(error)
    return text.splitlines()[0] if text.strip() else repr(error)


def debug_requested() -> bool:
    """Whether the running command was started as ``gsmflow --debug ...``.

    Example:
        >>> debug_requested()  # outside a command
        False
    """
    ctx = click.get_current_context(silent=True)
    return ctx is not None and bool(ctx.find_root().params.get("debug"))


class GSMFlowGroup(click.Group):
    """A group whose commands report user errors in one line and bugs with their traceback.

    Example:
        >>> isinstance(main, GSMFlowGroup)
        True
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise  # click's own: usage errors, --help, Ctrl-C
        except GSMFlowError as error:
            if ctx.params.get("debug"):
                traceback.print_exc()
            raise click.ClickException(error_line(error)) from None
        except Exception:
            click.echo(INTERNAL_ERROR, err=True)
            raise


@click.group(cls=GSMFlowGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gsmflow")
@click.option(
    "--debug",
    is_flag=True,
    help="Show the full traceback of an error, not only its one-line message.",
)
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """GSMFlow for generalized zero-shot learning: download data, train, benchmark."""
    ctx.with_resource(sigterm_as_exit())
