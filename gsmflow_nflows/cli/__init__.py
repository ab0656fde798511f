"""The ``gsmflow`` command line: a Click group whose commands live in sibling modules."""

from gsmflow_nflows.cli.main import main

__all__ = ["main"]
