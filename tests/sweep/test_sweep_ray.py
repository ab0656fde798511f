"""``gsmflow sweep`` and ``gsmflow table`` on a local Ray with 2 CPUs (the smoke preset, digits).

One Ray for the module. Its workers run a setup hook that logs every dataset load
(split, Tune trial id, which phase's code asked for it) to a file, so what the
trials read in their own processes can be checked here.
"""

import json
import os
import signal
import statistics

import pytest

ray = pytest.importorskip("ray", reason="the sweep needs Ray: pip install 'gsmflow-nflows[sweep]'")
tune = pytest.importorskip("ray.tune")

from click.testing import CliRunner  # noqa: E402

import gsmflow_nflows.sweep.run as sweep_run  # noqa: E402
from gsmflow_nflows.cli import main  # noqa: E402
from gsmflow_nflows.data import registry  # noqa: E402
from gsmflow_nflows.experiment import BenchRequest, run_bench  # noqa: E402
from gsmflow_nflows.sweep.run import SweepRequest, run_sweep  # noqa: E402
from gsmflow_nflows.sweep.tune_api import SweepError  # noqa: E402

#: The functions whose presence on the stack says which phase loaded the data.
PHASES = {"validation_trial": "search", "final_run": "final", "bench_seed": "table"}


def make_load_logger(log_path):
    """A worker setup hook: wrap load_xlsa17 (under every load_dataset) to log each load."""

    def hook():
        import json
        import traceback

        from gsmflow_nflows.data import registry

        real = registry.load_xlsa17

        def logged(root, folder, **options):
            names = {frame.name for frame in traceback.extract_stack()}
            try:
                from ray import tune

                trial = tune.get_context().get_trial_id()
            except Exception:  # not inside a trial
                trial = None
            phases = sorted(phase for name, phase in PHASES_BY_VALUE.items() if name in names)
            entry = {"split": options.get("split"), "trial": trial, "phases": phases,
                     "pid": os.getpid()}  # fmt: skip
            with open(log_path, "a") as stream:
                stream.write(json.dumps(entry) + "\n")
            return real(root, folder, **options)

        registry.load_xlsa17 = logged

    PHASES_BY_VALUE = dict(PHASES)  # noqa: N806  (captured by value in the pickled hook)
    return hook


@pytest.fixture(scope="module")
def load_log(tmp_path_factory):
    log = tmp_path_factory.mktemp("loads") / "loads.jsonl"
    log.touch()
    if ray.is_initialized():
        ray.shutdown()
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level="WARNING",
        runtime_env={"worker_process_setup_hook": make_load_logger(str(log))},
    )
    yield log
    ray.shutdown()


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    root = tmp_path / "data"
    monkeypatch.setenv("GSMFLOW_DATA", str(root))
    return root


def loads(log):
    return [json.loads(line) for line in log.read_text().splitlines()]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def driver_search_guard(monkeypatch):
    """In this (the driver's) process: reading the test split while the search runs raises."""
    state = {"searching": False}
    real_load, real_search = registry.load_xlsa17, sweep_run.search_phase

    def guarded(root, folder, **options):
        if state["searching"] and options.get("split") == "test":
            raise AssertionError("the driver read the test split during the search")
        return real_load(root, folder, **options)

    def search_phase(*args, **kwargs):
        state["searching"] = True
        try:
            return real_search(*args, **kwargs)
        finally:
            state["searching"] = False

    monkeypatch.setattr(registry, "load_xlsa17", guarded)
    monkeypatch.setattr(sweep_run, "search_phase", search_phase)


def test_sweep_writes_trials_best_and_both_test_results(
    load_log, data_root, tmp_path, driver_search_guard
):
    before = len(loads(load_log))
    out = tmp_path / "results.json"
    result = invoke("sweep", "--dataset", "digits", "--data-root", data_root, "--preset", "smoke",
                    "--trials", 2, "--seeds", 2, "--output", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    values = json.loads(out.read_text())
    assert {"trials", "best", "selected_on", "test", "environment"} <= set(values)
    assert values["selected_on"] == "val"

    space = values["space"]  # the default space of the smoke preset
    assert set(space) == {"training.lr", "training.max_iterations",
                          "evaluation.samples_per_class", "evaluation.classifier_lr"}  # fmt: skip
    trials = values["trials"]
    assert len(trials) == 2 and len({t["trial_id"] for t in trials}) == 2
    for trial in trials:
        assert set(trial["config"]) == set(space)
        low, high = space["training.lr"]["loguniform"]
        assert low <= trial["config"]["training.lr"] <= high
        assert trial["state"] in ("completed", "stopped early")
        validation = trial["validation"]
        evaluations = validation["evaluations"]
        assert validation["best_H"] == max(e["H"] for e in evaluations)
        assert (trial["state"] == "completed") == (
            evaluations[-1]["iteration"] == validation["total_iterations"]
        )
    best = max(trials, key=lambda t: t["validation"]["best_H"])
    assert values["best"]["trial_id"] == best["trial_id"]
    assert values["best"]["config"] == best["config"]
    assert values["best"]["validation_H"] == best["validation"]["best_H"]
    assert values["best"]["full_config"]["training"]["lr"] == best["config"]["training.lr"]

    test = values["test"]
    assert test["protocol"] == "final" and test["seeds"] == [0, 1]
    for name in ("best", "preset"):
        runs = test[name]["runs"]
        assert [run["seed"] for run in runs] == [0, 1]
        assert all(run["protocol"] == "final" for run in runs)
        assert test[name]["mean"]["H"] == pytest.approx(statistics.fmean(r["H"] for r in runs))
    # The preset's own run is the bench's: same config, same seeds, same numbers.
    request = BenchRequest("digits", data_root=str(data_root), preset="smoke",
                           seeds=(0, 1), baselines=False, device="cpu")  # fmt: skip
    bench = run_bench(request).to_dict()
    assert [run["H"] for run in test["preset"]["runs"]] == [run["H"] for run in bench["runs"]]
    assert values["preset_config"] == bench["config"]

    env = values["environment"]
    assert env["ray"] == ray.__version__ and env["device"] == "cpu"
    assert {"gsmflow_nflows", "torch", "nflows", "python", "command"} <= set(env)
    assert "sweep" in result.output and "best" in result.output and "preset" in result.output

    # In the trials' own processes: the search read the validation split only ...
    logged = loads(load_log)[before:]
    search = [entry for entry in logged if "search" in entry["phases"]]
    assert {entry["trial"] for entry in search} == {t["trial_id"] for t in trials}
    assert {entry["split"] for entry in search} == {"val"}
    # ... and the log does see test reads: the final phase's (so the check above can fail).
    assert "test" in {entry["split"] for entry in logged if "final" in entry["phases"]}


class InterruptAfterFirstTrial(tune.Callback):
    """Ctrl+C (SIGUSR1, which Tune handles the same way) once, after the first finished trial.

    Tune keeps the callbacks of an experiment when it is restored, so the marker
    file makes it fire once only; it records what the finished trial reported.
    """

    def __init__(self, marker):
        self.marker = str(marker)

    def on_trial_complete(self, iteration, trials, trial, **info):
        if os.path.exists(self.marker):
            return
        with open(self.marker, "w") as stream:
            json.dump({"trial_id": trial.trial_id, "best_H": trial.last_result["best_H"],
                       "evaluations": trial.last_result["evaluations"]}, stream)  # fmt: skip
        os.kill(os.getpid(), signal.SIGUSR1)


def test_resume_finishes_an_interrupted_sweep_without_rerunning_finished_trials(
    load_log, data_root, tmp_path
):
    before = len(loads(load_log))
    storage, out, marker = tmp_path / "state", tmp_path / "results.json", tmp_path / "marker"
    options = ["--dataset", "digits", "--data-root", data_root, "--preset", "smoke", "--trials", 3,
               "--scheduler", "fifo", "--max-concurrent", 1, "--storage", storage]  # fmt: skip
    request = SweepRequest("digits", trials=3, storage=str(storage), data_root=str(data_root),
                           preset="smoke", scheduler="fifo", max_concurrent=1)  # fmt: skip
    interrupted = "search phase was interrupted with [12] of 3 trials .*--resume"
    with pytest.raises(SweepError, match=interrupted):
        run_sweep(request, callbacks=[InterruptAfterFirstTrial(marker)])
    first = json.loads(marker.read_text())
    assert not (storage / "final").exists()  # stopped before the test phase

    refused = invoke("sweep", *options, "--output", out)  # without --resume: not overwritten
    assert refused.exit_code == 1 and "already holds a sweep" in refused.output
    changed = invoke("sweep", *options[:-2], "--storage", storage, "--seeds", 2, "--resume",
                     "--output", out)  # fmt: skip
    assert changed.exit_code == 1 and "seeds differ" in changed.output

    resumed = invoke("sweep", *options, "--resume", "--output", out)
    assert resumed.exit_code == 0, resumed.output
    values = json.loads(out.read_text())
    trials = {trial["trial_id"]: trial for trial in values["trials"]}
    assert len(trials) == 3 and all(t["state"] == "completed" for t in trials.values())
    kept = trials[first["trial_id"]]
    assert kept["validation"]["best_H"] == first["best_H"]
    assert kept["validation"]["evaluations"] == json.loads(first["evaluations"])

    search = [entry for entry in loads(load_log)[before:] if "search" in entry["phases"]]
    per_trial = {trial_id: sum(e["trial"] == trial_id for e in search) for trial_id in trials}
    assert per_trial[first["trial_id"]] == 1  # trained once, before the interruption
    assert all(count >= 1 for count in per_trial.values())
    assert set(values["test"]["best"]["seeds"]) == {0}


def test_table_gathers_one_trial_per_seed_into_the_bench_shape(load_log, data_root, tmp_path):
    out, table = tmp_path / "rows.json", tmp_path / "rows.md"
    result = invoke("table", "--datasets", "digits", "--data-root", data_root, "--presets",
                    "smoke", "--protocols", "final", "--seeds", 2, "--output", out,
                    "--markdown", table)  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())
    assert isinstance(rows, list) and len(rows) == 1
    row = rows[0]
    bench = run_bench(BenchRequest("digits", data_root=str(data_root), preset="smoke",
                                   seeds=(0, 1), device="cpu")).to_dict()  # fmt: skip
    assert row["seeds"] == [0, 1] == bench["seeds"]
    assert [run["H"] for run in row["runs"]] == [run["H"] for run in bench["runs"]]
    for metric in ("S", "U", "H", "T1"):
        assert row["mean"][metric] == pytest.approx(bench["mean"][metric])
        assert row["std"][metric] == pytest.approx(bench["std"][metric])
        assert row["baselines"]["mean"]["eszsl"][metric] == pytest.approx(
            bench["baselines"]["mean"]["eszsl"][metric]
        )
    assert set(row) >= set(bench) - {"seconds"}
    markdown = table.read_text()
    assert markdown.splitlines()[0].startswith("| dataset | data | preset | protocol |")
    assert "| DIGITS | real | smoke | final | fp32 | - | 2 |" in markdown
