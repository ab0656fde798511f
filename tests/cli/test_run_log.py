"""``--log-dir`` of ``gsmflow bench`` and ``train``, and progress output that suits a file."""

import csv
import io
import json

import pytest
from click.testing import CliRunner

from gsmflow_nflows.cli import main
from gsmflow_nflows.cli import run_log as cli_run_log
from gsmflow_nflows.cli.run import ProgressLine
from tests.tiny_gzsl import make_tiny


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_tiny(tmp_path_factory.mktemp("log-data"))


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _rows(path):
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))


def test_train_logs_every_iteration_and_progress_has_no_carriage_return(root, tmp_path):
    result = invoke("train", "--dataset", "tiny", "--data-root", root, "--preset", "smoke",
                    "--device", "cpu", "--output", tmp_path / "m.pt", "--seed", 7,
                    "--log-dir", tmp_path / "log")  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = _rows(tmp_path / "log" / "flow.csv")
    assert [int(row["iteration"]) for row in rows] == list(range(1, 41))  # smoke: 40
    assert {(row["seed"], row["split"]) for row in rows} == {("7", "test")}
    assert "\r" not in result.output
    flow_lines = [line for line in result.stderr.splitlines() if line.startswith("flow")]
    # a line per 10%, and one for the first iteration
    assert [line.split()[1] for line in flow_lines] == [f"{i}/40" for i in (1, *range(4, 41, 4))]


def test_bench_resumed_after_it_finished_adds_no_row(root, tmp_path):
    common = ["bench", "--dataset", "tiny", "--data-root", root, "--preset", "smoke",
              "--device", "cpu", "--no-baselines", "--checkpoint-dir", tmp_path / "ckpt",
              "--log-dir", tmp_path / "log", "--seeds", 2]  # fmt: skip
    first = invoke(*common, "--output", tmp_path / "a.json")
    assert first.exit_code == 0, first.output
    files = {
        name: (tmp_path / "log" / name).read_bytes() for name in ("flow.csv", "evaluations.csv")
    }
    again = invoke(*common, "--resume", "--output", tmp_path / "b.json")
    assert again.exit_code == 0, again.output
    for name, content in files.items():
        assert (tmp_path / "log" / name).read_bytes() == content, name
    rows = _rows(tmp_path / "log" / "evaluations.csv")
    runs = json.loads((tmp_path / "a.json").read_text())["runs"]
    assert [(int(r["seed"]), float(r["H"])) for r in rows] == [
        (run["seed"], run["H"]) for run in runs
    ]
    flow = _rows(tmp_path / "log" / "flow.csv")
    assert [(r["seed"], int(r["iteration"])) for r in flow] == [
        (seed, i) for seed in ("0", "1") for i in range(1, 41)]  # fmt: skip


def test_without_tensorboard_one_note_and_csv_only(root, tmp_path, monkeypatch):
    monkeypatch.setattr(cli_run_log, "tensorboard_available", lambda: False)
    result = invoke("train", "--dataset", "tiny", "--data-root", root, "--preset", "smoke",
                    "--device", "cpu", "--output", tmp_path / "m.pt",
                    "--log-dir", tmp_path / "log")  # fmt: skip
    assert result.exit_code == 0, result.output
    notes = [line for line in result.stderr.splitlines() if "TensorBoard" in line]
    assert notes == [cli_run_log.TENSORBOARD_NOTE]
    assert "gsmflow-nflows[tensorboard]" in notes[0]
    assert sorted(p.name for p in (tmp_path / "log").iterdir()) == [
        "evaluations.csv", "flow.csv", "mining.csv"]  # fmt: skip


def test_log_dir_that_is_a_file_is_one_clean_error(root, tmp_path):
    (tmp_path / "taken").write_text("")
    result = invoke("train", "--dataset", "tiny", "--data-root", root, "--preset", "smoke",
                    "--device", "cpu", "--output", tmp_path / "m.pt",
                    "--log-dir", tmp_path / "taken")  # fmt: skip
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert [line for line in result.output.splitlines() if line.startswith("Error")]
    assert not (tmp_path / "m.pt").exists()


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_line_redraws_in_place_on_a_terminal_only():
    terminal, file = _Terminal(), io.StringIO()
    for stream in (terminal, file):
        line = ProgressLine(stream)
        for done in range(1, 1001):
            line("flow", done, 1000, {"nll": 0.5, "lr": 1e-3})
    drawn = terminal.getvalue()
    assert drawn.startswith("\r") and drawn.endswith("\n") and drawn.count("\n") == 1
    assert drawn.count("\r") < 50  # redrawn at most every 0.1 s, not 1000 times
    assert "1000/1000" in drawn
    written = file.getvalue()
    assert "\r" not in written
    reported = [row.split()[1] for row in written.splitlines()]
    assert reported == [f"{done}/1000" for done in (1, *range(100, 1001, 100))]


def test_progress_line_starts_a_stage_again_when_it_restarts():
    file = io.StringIO()
    line = ProgressLine(file)
    for _ in range(2):  # e.g. protocol val's second training of the test flow
        for done in range(1, 11):
            line("seed 0 flow", done, 10, {})
    assert [row.split()[3] for row in file.getvalue().splitlines()].count("1/10") == 2
