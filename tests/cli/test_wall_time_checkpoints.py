"""Checkpoints by wall time: a run killed with SIGKILL mid-schedule resumes to the same result."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from click.testing import CliRunner

from gsmflow_nflows.cli import main
from gsmflow_nflows.data import load_dataset
from gsmflow_nflows.training import preset_config
from gsmflow_nflows.training import trainer as trainer_module
from gsmflow_nflows.training.trainer import GSMFlowTrainer
from tests.tiny_gzsl import make_tiny

METRICS = ("S", "U", "H", "T1")
LONG = ["--set", "training.epochs=3000", "--set", "training.max_iterations=3000"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_tiny(tmp_path_factory.mktemp("walltime"))


def _saved_iterations(monkeypatch, tmp_path, root, seconds):
    """Iterations at which a tiny run saves, on a clock that ticks 1 s per reading."""
    ticks = iter(range(10**6))
    monkeypatch.setattr(trainer_module, "monotonic", lambda: float(next(ticks)))
    saved = []
    original = trainer_module.GSMFlowTrainer._checkpoint

    def record(self, run, signature):
        saved.append(run.iteration)
        original(self, run, signature)

    monkeypatch.setattr(trainer_module.GSMFlowTrainer, "_checkpoint", record)
    data = load_dataset("tiny", data_root=root)
    config = preset_config("tiny", data, "smoke")
    trainer = GSMFlowTrainer(
        config,
        data,
        device="cpu",
        checkpoint_path=tmp_path / f"c{seconds}.pt",
        checkpoint_every=10**6,
        checkpoint_seconds=seconds,
    )
    trainer.fit()
    return saved, trainer.total_iterations


def test_checkpoints_follow_the_clock(monkeypatch, tmp_path, root):
    saved, total = _saved_iterations(monkeypatch, tmp_path, root, seconds=5)
    # one reading per step and one after each save (the next interval's start): saves once
    # 5 readings have passed, i.e. every 5 steps, and at the end
    assert saved[:3] == [5, 10, 15]
    assert saved[-1] == total
    saved, total = _saved_iterations(monkeypatch, tmp_path, root, seconds=None)
    assert saved == [total]  # by iterations only: just the end


def test_bad_checkpoint_seconds_is_a_clear_error(root):
    data = load_dataset("tiny", data_root=root)
    with pytest.raises(ValueError, match="checkpoint_seconds must be a positive number"):
        GSMFlowTrainer(preset_config("tiny", data, "smoke"), data, checkpoint_seconds=0)


def _bench(root, out, *extra):
    args = ["bench", "--dataset", "tiny", "--data-root", str(root), "--preset", "smoke",
            "--device", "cpu", "--no-baselines", *LONG, "--output", str(out), *extra]  # fmt: skip
    return args


def test_sigkill_mid_schedule_then_resume_gives_the_uninterrupted_result(root, tmp_path):
    reference = CliRunner().invoke(main, _bench(root, tmp_path / "ref.json"))
    assert reference.exit_code == 0, reference.output
    checkpoints = tmp_path / "ckpt"
    args = _bench(root, tmp_path / "killed.json", "--checkpoint-dir", str(checkpoints),
                  "--checkpoint-every", "1000000", "--checkpoint-minutes", "0.002")  # fmt: skip
    code = "import sys; from gsmflow_nflows.cli import main; sys.exit(main())"
    process = subprocess.Popen(
        [sys.executable, "-c", code, *args[:]],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    path = checkpoints / "final-test-seed0.pt"
    iteration, deadline = 0, time.monotonic() + 120
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if path.exists():
                try:
                    iteration = torch.load(path, weights_only=True)["iteration"]
                except Exception:  # caught mid-rename; read again
                    iteration = 0
                if 0 < iteration:
                    break
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    if not 0 < iteration < 3000:
        pytest.skip(f"the run was not caught mid-schedule (checkpoint at {iteration})")
    assert not (tmp_path / "killed.json").exists()
    resumed = CliRunner().invoke(main, [*args, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    first = json.loads((tmp_path / "ref.json").read_text())["runs"][0]
    again = json.loads((tmp_path / "killed.json").read_text())["runs"][0]
    assert [again[m] for m in METRICS] == [first[m] for m in METRICS]
    assert again["iteration"] == first["iteration"] == 3000
