"""The run log: every iteration's losses as the steps made them, read from the device in
batches, no duplicated row after a kill and a resume, evaluations under every protocol."""

import csv
import sys

import pytest
import torch

from gsmflow_nflows.errors import ConfigError
from gsmflow_nflows.evaluation.protocols import run_protocol
from gsmflow_nflows.run_log import RunLog, evaluation_rows, parse_stage, read_run_log
from gsmflow_nflows.training import GSMFlowTrainer
from gsmflow_nflows.training import trainer as trainer_module
from tests.tiny_gzsl import load_tiny, tiny_config


def _rows(path):
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))


class _Steps:
    """Wraps ``train_step``: each step's losses read at once (the truth), and the step count."""

    def __init__(self, monkeypatch):
        self.count, self.losses = 0, []
        real = trainer_module.train_step

        def step(*args, **kwargs):
            losses = real(*args, **kwargs)
            self.count += 1
            self.losses.append({name: float(value) for name, value in losses.items()})
            return losses

        monkeypatch.setattr(trainer_module, "train_step", step)


def test_every_iteration_is_logged_as_the_step_computed_it(tiny_data, tmp_path, monkeypatch):
    steps = _Steps(monkeypatch)
    config = tiny_config(seed=3, training={"epochs": 10, "lr_step_epochs": 3})  # 40 iterations
    calls = []  # (iteration reported, steps taken when it was reported)
    with RunLog(tmp_path, seed=3) as log:

        def progress(stage, done, total, losses):
            if stage == "flow":
                calls.append((done, steps.count))
            log(stage, done, total, losses)

        trainer = GSMFlowTrainer(config, tiny_data, device="cpu")
        trainer.fit(progress=progress, progress_every=1)
    rows = _rows(tmp_path / "flow.csv")
    assert [int(row["iteration"]) for row in rows] == list(range(1, 41))
    assert {row["seed"] for row in rows} == {"3"} and {row["split"] for row in rows} == {"test"}
    for row, truth in zip(rows, steps.losses, strict=True):
        for name in ("nll", "prototype", "loss"):
            assert float(row[name]) == truth[name]  # exact: repr round-trips
    # lr after the iteration's scheduler step: 1e-3 halved every 3 epochs of 4 iterations
    for row in rows:
        expected = 1e-3 * 0.5 ** ((int(row["iteration"]) // 4) // 3)
        assert float(row["lr"]) == pytest.approx(expected, rel=1e-12)
    # one read from the device per 10 iterations: reports arrive after steps 10, 20, 30, 40
    assert sorted({taken for _, taken in calls}) == [10, 20, 30, 40]
    assert all(taken - done < 10 for done, taken in calls)


def _fit_logged(data, log_dir, checkpoint, *, resume, kill_at=None):
    """Fit 40 iterations (checkpoints every 7) into a run log; optionally die at ``kill_at``."""
    config = tiny_config(seed=5, training={"epochs": 10})
    trainer = GSMFlowTrainer(
        config, data, device="cpu", checkpoint_path=checkpoint, checkpoint_every=7
    )
    with RunLog(log_dir, seed=5, resume=resume) as log:

        def progress(stage, done, total, losses):
            log(stage, done, total, losses)
            if done == kill_at:
                raise KeyboardInterrupt  # after the row is written, before the next checkpoint

        trainer.fit(resume=resume, progress=progress, progress_every=1)


def test_a_killed_and_resumed_run_logs_every_iteration_once(tiny_data, tmp_path):
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    _fit_logged(tiny_data, whole, tmp_path / "whole.pt", resume=False)
    with pytest.raises(KeyboardInterrupt):
        _fit_logged(tiny_data, broken, tmp_path / "broken.pt", resume=False, kill_at=17)
    checkpoint = torch.load(tmp_path / "broken.pt", weights_only=False)
    assert checkpoint["iteration"] == 14  # the log (17 rows) got ahead of the checkpoint
    assert len(_rows(broken / "flow.csv")) == 17
    with open(broken / "flow.csv", "a") as stream:
        stream.write("5,test,18,0.25")  # a row cut by the kill, without its newline
    _fit_logged(tiny_data, broken, tmp_path / "broken.pt", resume=True)
    assert (broken / "flow.csv").read_bytes() == (whole / "flow.csv").read_bytes()
    assert len(_rows(whole / "flow.csv")) == 40


def test_without_resume_the_log_starts_over(tmp_path):
    losses = {"nll": 1.0, "prototype": 0.0, "loss": 1.0, "lr": 0.1}
    with RunLog(tmp_path) as log:
        log("flow", 1, 2, losses)
        log("flow", 2, 2, losses)
    with RunLog(tmp_path) as log:
        log("flow", 1, 2, {**losses, "nll": 7.0})
    rows = _rows(tmp_path / "flow.csv")
    assert [(row["iteration"], row["nll"]) for row in rows] == [("1", "7.0")]


def test_stage_names_give_seed_split_and_kind(tmp_path):
    assert parse_stage("seed 12 val relation") == (12, "val", "relation")
    assert parse_stage("seed 0 flow") == (0, "test", "flow")
    assert parse_stage("val mining") == (None, "val", "mining")
    with RunLog(tmp_path, seed=9) as log:
        log("relation", 1, 4, {})
        log("seed 2 val mining", 3, 3, {})
        log("relation", 1, 4, {})  # a restarted stage: not twice
    assert [list(row.values()) for row in _rows(tmp_path / "mining.csv")] == [
        ["9", "test", "relation", "1", "4"],
        ["2", "val", "mining", "3", "3"],
    ]


def test_evaluation_rows_pair_the_epochs_of_both_classifiers():
    full = {"iteration": 30, "gzsl_epochs": 3, "zsl_epochs": 5,
            "gzsl": [{"S": 0.1 * e, "U": 0.2, "H": 0.3} for e in (1, 2, 3)],
            "zsl_t1": [0.5, 0.6, 0.7, 0.8, 0.9]}  # fmt: skip
    rows = evaluation_rows(1, "val", full)
    assert [(r["classifier_epoch"], r["t1_epoch"]) for r in rows] == [
        (1, 1), (2, 2), (3, 3), ("", 4), ("", 5)]  # fmt: skip
    assert [r["S"] for r in rows] == [0.1, 0.2, pytest.approx(0.3), "", ""]
    assert [r["T1"] for r in rows] == [0.5, 0.6, 0.7, 0.8, 0.9]
    last_only = {"iteration": 40, "gzsl_epochs": 1000, "zsl_epochs": 2000,
                 "gzsl": [{"S": 0.9, "U": 0.4, "H": 0.55}], "zsl_t1": [0.6],
                 "calibration": 0.25}  # fmt: skip
    (row,) = evaluation_rows(0, "test", last_only)
    assert (row["classifier_epoch"], row["t1_epoch"], row["calibration"]) == (1000, 2000, 0.25)


def _log_protocol(protocol, data_root, log_dir, **options):
    config = tiny_config(seed=1, evaluation={"eval_every": 5, "eval_start": 10})
    with RunLog(log_dir) as log:
        result = run_protocol(
            protocol,
            config,
            lambda split: load_tiny(data_root, split=split),
            device="cpu",
            progress=log,
            progress_every=1,
            on_evaluation=log.evaluation,
            **options,
        )
    return result, read_run_log(log_dir)


def _scores(row):
    return row["S"], row["U"], row["H"]


@pytest.mark.parametrize("protocol", ["final", "paper", "val"])
def test_every_protocol_logs_the_evaluations_its_result_comes_from(tiny_root, tmp_path, protocol):
    result, tables = _log_protocol(protocol, tiny_root, tmp_path)
    test_rows = [row for row in tables.evaluations if row["split"] == "test"]
    chosen = [
        row
        for row in test_rows
        if row["iteration"] == result.iteration
        and row["classifier_epoch"] == result.classifier_epoch
    ]
    assert len(chosen) == 1 and _scores(chosen[0]) == (result.S, result.U, result.H)
    t1 = [
        row
        for row in test_rows
        if row["iteration"] == result.t1_iteration and row["t1_epoch"] == result.t1_epoch
    ]
    assert len(t1) == 1 and t1[0]["T1"] == result.T1
    expected = {(r["iteration"], len(r["gzsl"]), len(r["zsl_t1"])) for r in result.evaluations}
    logged = {(i, sum(1 for r in test_rows if r["iteration"] == i and r["S"] is not None),
               sum(1 for r in test_rows if r["iteration"] == i and r["T1"] is not None))
              for i in {r["iteration"] for r in test_rows}}  # fmt: skip
    assert logged == expected
    val_rows = [row for row in tables.evaluations if row["split"] == "val"]
    if protocol == "paper":
        assert max(row["H"] for row in test_rows) == result.H  # the best on the test set
    if protocol == "val":
        assert {r["iteration"] for r in val_rows} == {r["iteration"] for r in result.validation}
        best = max((row for row in val_rows if row["H"] is not None), key=lambda r: r["H"])
        assert best["classifier_epoch"] == result.classifier_epoch
        val_flow = [row["iteration"] for row in tables.flow if row["split"] == "val"]
        assert val_flow == list(range(1, max(r["iteration"] for r in result.validation) + 1))
        test_flow = [row["iteration"] for row in tables.flow if row["split"] == "test"]
        assert test_flow == list(range(1, max(result.iteration, result.t1_iteration) + 1))
    else:
        assert val_rows == []
    assert len({(r["seed"], r["split"], r["iteration"]) for r in tables.flow}) == len(tables.flow)


def test_calibrated_evaluation_is_logged_beside_the_plain_one(tiny_root, tmp_path):
    result, tables = _log_protocol("final", tiny_root, tmp_path, calibrate=True)
    offset = result.calibrated["offset"]
    calibrated = [row for row in tables.evaluations if row["calibration"]]
    assert offset != 0.0 and len(calibrated) == 1
    assert calibrated[0]["calibration"] == offset
    assert _scores(calibrated[0]) == tuple(result.calibrated[k] for k in ("S", "U", "H"))


def test_a_log_of_other_columns_is_refused(tmp_path):
    (tmp_path / "flow.csv").write_text("step,value\n1,2\n")
    with pytest.raises(ConfigError, match="other columns"):
        RunLog(tmp_path, resume=True)
    with pytest.raises(ConfigError, match="holds no run log"):
        read_run_log(tmp_path / "empty")


def test_tensorboard_without_the_package_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    with pytest.raises(ConfigError, match=r"gsmflow-nflows\[tensorboard\]"):
        RunLog(tmp_path, tensorboard=True)


def test_tensorboard_scalars_are_the_csv_values(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with RunLog(tmp_path, seed=4, tensorboard=True) as log:
        for step in range(1, 26):
            log("flow", step, 25, {"nll": 1.0 / step, "prototype": 0.0, "loss": 1.0 / step,
                                   "lr": 0.1})  # fmt: skip
        gzsl = [{"S": 0.5, "U": 0.1, "H": 0.2}, {"S": 0.6, "U": 0.2, "H": 0.3}]
        record = {"iteration": 3, "gzsl_epochs": 2, "zsl_epochs": 2, "zsl_t1": [0.3, 0.4],
                  "gzsl": gzsl}  # fmt: skip
        log.evaluation(4, "test", record)
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    nll = events.Scalars("seed4/test/flow/nll")
    # every 10th iteration and the last; the CSV file holds all 25
    rows = _rows(tmp_path / "flow.csv")
    assert len(rows) == 25 and [e.step for e in nll] == [10, 20, 25]
    for event in nll:  # TensorBoard keeps float32
        assert event.value == pytest.approx(float(rows[event.step - 1]["nll"]), rel=1e-7)
    assert [e.value for e in events.Scalars("seed4/test/eval/H")] == [pytest.approx(0.3)]
