"""``gsmflow plot``: a t-SNE PNG of a model, a curves PNG of a run log, and its errors."""

import struct
import sys

import pytest
from click.testing import CliRunner

from gsmflow_nflows.cli import main
from tests.tiny_gzsl import make_tiny

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A smoke model of TINY and the log of a paper-protocol bench (evaluations at 2 points)."""
    folder = tmp_path_factory.mktemp("plot")
    root = make_tiny(folder / "data")
    model = folder / "model.pt"
    result = invoke("train", "--dataset", "tiny", "--data-root", root, "--preset", "smoke",
                    "--device", "cpu", "--output", model)  # fmt: skip
    assert result.exit_code == 0, result.output
    log = folder / "log"
    result = invoke("bench", "--dataset", "tiny", "--data-root", root, "--preset", "smoke",
                    "--protocol", "paper", "--device", "cpu", "--no-baselines",
                    "--log-dir", log)  # fmt: skip
    assert result.exit_code == 0, result.output
    return root, model, log


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _png_size(path):
    """(width, height) from the PNG's IHDR chunk, after checking the signature."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_tsne_of_a_model_writes_a_png(trained, tmp_path):
    pytest.importorskip("matplotlib")
    root, model, _ = trained
    out = tmp_path / "tsne.png"
    result = invoke("plot", model, "--dataset", "tiny", "--data-root", root, "--output", out,
                    "--per-class", 5, "--device", "cpu")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert _png_size(out) == (640, 520)
    assert 10_000 < out.stat().st_size < 150_000
    assert "2 unseen classes: 10 real, 10 generated" in result.output


def test_curves_of_a_run_log_write_a_png(trained, tmp_path):
    pytest.importorskip("matplotlib")
    _, _, log = trained
    out = tmp_path / "curves.png"
    result = invoke("plot", "--log-dir", log, "--output", out)
    assert result.exit_code == 0, result.output
    assert _png_size(out) == (1000, 380)  # two panels: losses and S/U/H
    assert 10_000 < out.stat().st_size < 150_000
    assert "40 flow iterations, 2 evaluations" in result.output  # smoke: 40; at 20 and 40


@pytest.mark.parametrize(
    "args, phrase",
    [
        ([], "give a MODEL (with --dataset) or --log-dir"),
        (["MODEL", "--log-dir", "LOG"], "not both or neither"),
        (["MODEL"], "needs --dataset"),
    ],
)
def test_plot_usage_errors(trained, tmp_path, args, phrase):
    _, model, log = trained
    names = {"MODEL": model, "LOG": log}
    result = invoke("plot", *[names.get(a, a) for a in args], "--output", tmp_path / "x.png")
    assert result.exit_code == 2 and phrase in result.output
    assert not (tmp_path / "x.png").exists()


def test_plot_without_matplotlib_is_one_error_naming_the_extra(trained, tmp_path, monkeypatch):
    _, _, log = trained
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)
    result = invoke("plot", "--log-dir", log, "--output", tmp_path / "x.png")
    assert result.exit_code == 1 and "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert errors == ['Error: plots need matplotlib: pip install "gsmflow-nflows[plot]".']
    assert not (tmp_path / "x.png").exists()


def test_plot_of_a_folder_without_a_log_is_one_error(tmp_path):
    result = invoke("plot", "--log-dir", tmp_path, "--output", tmp_path / "x.png")
    assert result.exit_code == 1 and "holds no run log" in result.output
