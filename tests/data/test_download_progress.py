"""``gsmflow download``'s progress: a bar with rate on a terminal, plain lines in a file;
``--data-root`` (and the old ``--root``) on ``download`` and ``datasets``."""

from __future__ import annotations

import io

import pytest
from click.testing import CliRunner

from gsmflow_nflows.cli import main
from gsmflow_nflows.cli.data import DownloadBar
from tests.data import test_download

server = test_download.server  # the HTTP server on 127.0.0.1 (a fixture)


def test_download_to_a_file_has_no_carriage_return(server, tmp_path):
    archive = test_download._official_zip(tmp_path)
    server.routes["/xlsa17.zip"] = archive
    result = CliRunner().invoke(main, ["download", "apy", "--data-root", str(tmp_path / "r"),
                                       "--url", f"{server.url}/xlsa17.zip"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "\r" not in result.output and "\r" not in result.stderr
    size = f"{len(archive) / 2**20:.1f}"
    lines = result.stderr.splitlines()
    assert lines[0] == f"apy: downloading ({size} MiB)"
    assert lines[1].startswith(f"apy: downloaded {size} MiB in ") and lines[1].endswith("MiB/s)")
    assert (tmp_path / "r" / "APY" / "res101.mat").is_file()


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_download_bar_on_a_terminal_shows_size_and_rate_in_place():
    terminal = _Terminal()
    bar = DownloadBar("apy", terminal)
    total = 8 * 2**20
    for done in range(2 * 2**20, total + 1, 2**16):  # resumed at 2 MiB
        bar(done, total)
    bar.close()
    drawn = terminal.getvalue()
    assert "\r" in drawn and "resuming at 2.0 MiB" in drawn
    assert "8.0/8.0 MiB" in drawn and "MiB/s" in drawn and "100%" in drawn
    assert drawn.splitlines()[-1].startswith("apy: downloaded 8.0 MiB in ")


def test_a_cut_download_says_where_it_stopped():
    file = io.StringIO()
    bar = DownloadBar("apy", file)
    bar(0, 4 * 2**20)
    bar(2**20, 4 * 2**20)
    bar.close()
    assert file.getvalue().splitlines()[-1].startswith("apy: stopped after 1.0 of 4.0 MiB in ")


@pytest.mark.parametrize("spelling", ["--data-root", "--root"])
def test_datasets_takes_both_spellings_of_the_data_root(tmp_path, spelling):
    result = CliRunner().invoke(main, ["datasets", spelling, str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == f"data root: {tmp_path}"


@pytest.mark.parametrize("spelling", ["--data-root", "--root"])
def test_download_takes_both_spellings_of_the_data_root(server, tmp_path, spelling):
    server.routes["/xlsa17.zip"] = test_download._official_zip(tmp_path)
    root = tmp_path / "root"
    result = CliRunner().invoke(main, ["download", "awa1", spelling, str(root),
                                       "--url", f"{server.url}/xlsa17.zip"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"awa1: ready in {root / 'AWA1'}" in result.output


def test_a_download_of_unknown_size_shows_what_came():
    terminal = _Terminal()
    bar = DownloadBar("flo", terminal)
    for done in (0, 2**20, 3 * 2**20):
        bar(done, None)
    bar.close()
    drawn = terminal.getvalue()
    assert "flo: downloading (size unknown)" in drawn and "%" not in drawn
    assert drawn.splitlines()[-1].startswith("flo: downloaded 3.0 MiB in ")
