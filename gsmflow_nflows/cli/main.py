"""The ``gsmflow`` Click group. Commands register themselves from sibling modules."""

import click

from gsmflow_nflows import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gsmflow")
def main() -> None:
    """GSMFlow for generalized zero-shot learning: download data, train, benchmark."""
