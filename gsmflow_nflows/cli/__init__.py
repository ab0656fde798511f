"""The ``gsmflow`` command line: a Click group whose commands live in sibling modules."""

from gsmflow_nflows.cli.main import main

__all__ = ["main"]
from gsmflow_nflows.cli import data as _data  # noqa: F401,E402  (registers commands)
from gsmflow_nflows.cli import plot as _plot  # noqa: F401,E402  (registers commands)
from gsmflow_nflows.cli import run as _run  # noqa: F401,E402  (registers commands)
from gsmflow_nflows.cli import sweep as _sweep  # noqa: F401,E402  (registers commands)
