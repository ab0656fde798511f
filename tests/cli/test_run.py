"""``gsmflow bench``, ``train``, ``generate``, ``evaluate`` through click's CliRunner."""

import json
import statistics

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from gsmflow_nflows.cli import main
from gsmflow_nflows.cli.table import BASELINE_NAMES, format_table
from gsmflow_nflows.data import load_dataset
from gsmflow_nflows.experiment import BenchResult
from tests.tiny_gzsl import load_tiny, make_tiny

METRICS = ("S", "U", "H", "T1")
BASELINES = ("eszsl", "linear_gaussian", "seen_only", "chance")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """TINY (16-d), OTHER (12-d) and TWIN (TINY's shapes and split, other class vectors)."""
    root = make_tiny(tmp_path_factory.mktemp("cli-data"))
    make_tiny(root, name="OTHER", seed=2, feature_dim=12)
    make_tiny(root, name="TWIN", seed=13)  # seed 13 draws the same seen/unseen split
    return root


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_clean_error(result, *phrases):
    """Non-zero exit, no traceback, exactly one line starting with "Error"."""
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # no uncaught exception
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, result.output
    for phrase in phrases:
        assert phrase in errors[0], errors[0]


def _without_seconds(value):
    if isinstance(value, dict):
        return {k: _without_seconds(v) for k, v in value.items() if k != "seconds"}
    if isinstance(value, list):
        return [_without_seconds(v) for v in value]
    return value


def test_bench_synthetic_writes_well_formed_json(tmp_path_factory):
    data_root, out = tmp_path_factory.mktemp("synthetic"), tmp_path_factory.mktemp("out")
    result = invoke("bench", "--dataset", "synthetic", "--data-root", data_root, "--preset",
                    "smoke", "--device", "cpu", "--output", out / "out.json")  # fmt: skip
    assert result.exit_code == 0, result.output
    values = json.loads((out / "out.json").read_text())
    assert {"config", "runs", "mean", "std", "seeds"} <= set(values)
    assert values["seeds"] == [0] and len(values["runs"]) == 1
    assert values["dataset"] == "SYNTHETIC" and values["protocol"] == "final"
    assert values["split_sizes"]["seen_classes"] == 20
    for metric in METRICS:
        assert values["mean"][metric] == values["runs"][0][metric]
        assert values["std"][metric] == 0.0
        assert 0.0 <= values["mean"][metric] <= 1.0
    assert values["config"]["training"]["max_iterations"] == 40  # the smoke preset
    assert "SYNTHETIC" in result.output and f"wrote {out / 'out.json'}" in result.output


def test_bench_two_seeds_mean_std_and_repeatability(root, tmp_path):
    outputs = []
    for name in ("a.json", "b.json"):
        result = invoke("bench", "--dataset", "tiny", "--data-root", root, "--preset", "smoke",
                        "--seeds", 2, "--seed", 5, "--device", "cpu", "--output",
                        tmp_path / name)  # fmt: skip
        assert result.exit_code == 0, result.output
        outputs.append(json.loads((tmp_path / name).read_text()))
    values = outputs[0]
    assert values["seeds"] == [5, 6]
    assert [run["seed"] for run in values["runs"]] == [5, 6]
    for metric in METRICS:
        per_seed = [run[metric] for run in values["runs"]]
        assert values["mean"][metric] == pytest.approx((per_seed[0] + per_seed[1]) / 2)
        assert values["std"][metric] == pytest.approx(statistics.stdev(per_seed))
        assert values["std"][metric] == pytest.approx(abs(per_seed[0] - per_seed[1]) / 2**0.5)
    assert values["runs"][0] != values["runs"][1]  # different seeds, different runs
    assert _without_seconds(outputs[0]) == _without_seconds(outputs[1])

    baselines = values["baselines"]
    assert set(baselines) == {"per_seed", "mean", "std"}
    assert [entry["seed"] for entry in baselines["per_seed"]] == [5, 6]
    for entry in baselines["per_seed"]:
        assert set(entry) == {"seed", *BASELINES}
        for name in BASELINES:
            assert set(entry[name]) == {*METRICS, "seconds"}
        assert entry["seen_only"]["U"] == 0.0 and entry["seen_only"]["H"] == 0.0
        assert entry["chance"]["H"] == 1 / 6 and entry["chance"]["T1"] == 1 / 2  # 4 + 2 classes
    for name in BASELINES:
        assert set(baselines["mean"][name]) == set(METRICS) == set(baselines["std"][name])
        for metric in METRICS:
            per_seed = [entry[name][metric] for entry in baselines["per_seed"]]
            assert baselines["mean"][name][metric] == statistics.fmean(per_seed)
            assert baselines["std"][name][metric] == statistics.stdev(per_seed)
    # ESZSL has no seed; the linear-Gaussian generator and its classifier do
    assert baselines["per_seed"][0]["eszsl"]["H"] == baselines["per_seed"][1]["eszsl"]["H"]
    assert _without_seconds(baselines["per_seed"][0]["linear_gaussian"]) != _without_seconds(
        baselines["per_seed"][1]["linear_gaussian"]
    )
    for label in BASELINE_NAMES.values():
        assert sum(line.startswith(label) for line in result.output.splitlines()) == 1
    assert "GSMFlow H " in result.output and "vs best baseline" in result.output


def test_bench_no_baselines_writes_null_and_no_rows(root, tmp_path):
    result = invoke("bench", "--dataset", "tiny", "--data-root", root, "--preset", "smoke",
                    "--device", "cpu", "--no-baselines", "--output",
                    tmp_path / "out.json")  # fmt: skip
    assert result.exit_code == 0, result.output
    values = json.loads((tmp_path / "out.json").read_text())
    assert values["baselines"] is None
    assert len(values["runs"]) == 1
    for label in ("ESZSL", "linear-Gaussian", "seen-only", "chance", "best baseline"):
        assert label not in result.output
    assert "data: xlsa17-format files" in result.output  # the other lines stay


def _fake_result(gsmflow_h, eszsl_h, linear_h):
    def scores(h):
        return {"S": 0.5, "U": 0.25, "H": h, "T1": 0.4}

    zero = {metric: 0.0 for metric in METRICS}
    means = {"eszsl": scores(eszsl_h), "linear_gaussian": scores(linear_h)}
    means |= {"seen_only": scores(0.0), "chance": scores(0.1)}
    return {
        "dataset": "TINY",
        "protocol": "paper",
        "seeds": [0],
        "mean": scores(gsmflow_h),
        "std": zero,
        "seconds": 75.0,
        "data": "somewhere",
        "preset": "smoke",
        "precision": "fp32",
        "device": "cpu",
        "ablate": [],
        "baselines": {
            "per_seed": [{"seed": 0, **{k: {**v, "seconds": 2.0} for k, v in means.items()}}],
            "mean": means,
            "std": {name: zero for name in means},
        },
    }


def test_format_table_rows_and_verdict():
    table = format_table(BenchResult.from_dict(_fake_result(0.612, 0.55, 0.501)))
    lines = table.splitlines()
    assert lines[1].startswith("TINY") and "61.2 ± 0.0" in lines[1] and "1m15s" in lines[1]
    assert [line.split("  ")[0] for line in lines[2:6]] == list(BASELINE_NAMES.values())
    assert "55.0 ± 0.0" in lines[2] and lines[2].rstrip().endswith("2s")
    # every row has the same width, so the columns line up under the header
    assert len({len(line) for line in lines[:6]}) == 1
    assert "GSMFlow H 61.2 vs best baseline 55.0 (ESZSL): +6.2" in table
    assert "beats ESZSL (55.0)" in table and "beats linear-Gaussian (50.1)" in table
    assert "ON THE TEST SET" in table  # the paper-protocol note stays

    losing = format_table(BenchResult.from_dict(_fake_result(0.30, 0.20, 0.45)))
    assert "GSMFlow H 30.0 vs best baseline 45.0 (linear-Gaussian): -15.0" in losing
    assert "beats ESZSL (20.0)" in losing and "loses to linear-Gaussian (45.0)" in losing

    result = _fake_result(0.3, 0.2, 0.45)
    result["baselines"] = None
    plain = format_table(BenchResult.from_dict(result))
    assert "best baseline" not in plain and "ESZSL" not in plain
    assert len(plain.splitlines()) == len(table.splitlines()) - 5  # 4 rows and the verdict


@pytest.fixture
def out(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


def _assert_nothing_written(folder):
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize(
    "args, phrases",
    [
        (["--dataset", "nosuch"], ["unknown dataset 'nosuch'"]),
        (["--dataset", "apy"], ["dataset 'apy' not found", "gsmflow download apy"]),
        (["--dataset", "tiny", "--preset", "huge"], ["--preset", "huge"]),
        (["--dataset", "tiny", "--protocol", "best"], ["--protocol", "best"]),
        (["--dataset", "tiny", "--ablate", "mining,foo"], ["--ablate", "foo"]),
        (["--dataset", "tiny", "--resume"], ["--resume needs --checkpoint-dir"]),
        (["--dataset", "tiny", "--device", "tpu"], ["device"]),
    ],
    ids=["unknown-dataset", "missing-known", "preset", "protocol", "ablate", "resume", "device"],
)
def test_bench_errors_are_one_clean_line(root, out, args, phrases):
    result = invoke("bench", "--data-root", root, "--preset", "smoke", *args,
                    "--output", out / "out.json")  # fmt: skip
    assert_clean_error(result, *phrases)
    _assert_nothing_written(out)


def test_bench_unwritable_output_fails_before_any_work(root, tmp_path):
    missing = tmp_path / "no-such-folder" / "out.json"
    result = invoke("bench", "--dataset", "tiny", "--data-root", root, "--preset", "smoke",
                    "--output", missing)  # fmt: skip
    assert_clean_error(result, "cannot write", "does not exist")
    assert "seed 0" not in result.output  # no training started
    assert not missing.parent.exists()


def test_bench_resume_with_a_corrupt_checkpoint(root, out, tmp_path):
    checkpoints = tmp_path / "ckpt"
    common = ["bench", "--dataset", "tiny", "--data-root", root, "--preset", "smoke",
              "--device", "cpu", "--checkpoint-dir", checkpoints]  # fmt: skip
    assert invoke(*common).exit_code == 0
    files = list(checkpoints.glob("*.pt"))
    assert files
    for path in files:
        path.write_bytes(b"garbage" * 20)
    result = invoke(*common, "--resume", "--output", out / "out.json")
    assert_clean_error(result, "not a readable checkpoint")
    _assert_nothing_written(out)


def test_train_generate_evaluate_round_trip(root, tmp_path):
    model, features = tmp_path / "model.pt", tmp_path / "features.npz"
    result = invoke("train", "--dataset", "tiny", "--data-root", root, "--preset", "smoke",
                    "--device", "cpu", "--output", model)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert model.is_file() and "40 iterations" in result.output

    result = invoke("generate", model, "--output", features, "--num-per-class", 7,
                    "--device", "cpu")  # fmt: skip
    assert result.exit_code == 0, result.output
    data = load_tiny(root)
    with np.load(features) as arrays:
        assert set(arrays.files) == {
            "features",
            "labels",
            "class_ids",
            "class_names",
            "feature_shift",
            "feature_scale",
        }
        names = [data.class_names[i] for i in data.unseen_classes.tolist()]
        assert arrays["class_names"].tolist() == names
        assert np.array_equal(arrays["feature_shift"], data.feature_shift.numpy())
        assert np.array_equal(arrays["feature_scale"], data.feature_scale.numpy())
        assert arrays["features"].shape == (data.num_unseen * 7, data.feature_dim)
        assert np.isfinite(arrays["features"]).all()
        assert arrays["labels"].tolist() == np.repeat(np.arange(data.num_unseen), 7).tolist()
        assert arrays["class_ids"].tolist() == data.unseen_classes.tolist()

    default = tmp_path / "default.npz"  # the smoke preset's 50 per class
    assert invoke("generate", model, "--output", default, "--device", "cpu").exit_code == 0
    with np.load(default) as arrays:
        assert arrays["features"].shape == (data.num_unseen * 50, data.feature_dim)

    result = invoke("evaluate", model, "--dataset", "tiny", "--data-root", root,
                    "--device", "cpu")  # fmt: skip
    assert result.exit_code == 0, result.output
    line = result.output.strip().splitlines()[-1]
    numbers = dict(zip(line.split()[-8::2], map(float, line.split()[-7::2]), strict=True))
    assert set(numbers) == set(METRICS)
    assert all(0.0 <= value <= 100.0 for value in numbers.values())

    for other in ("other", "twin"):  # another feature dim; same shapes, other class vectors
        result = invoke("evaluate", model, "--dataset", other, "--data-root", root,
                        "--device", "cpu")  # fmt: skip
        assert_clean_error(result, "the model was trained on TINY")


def test_twin_dataset_differs_only_in_class_vectors(root):
    tiny, twin = load_dataset("tiny", data_root=root), load_dataset("twin", data_root=root)
    assert torch.equal(tiny.unseen_classes, twin.unseen_classes)
    assert tiny.feature_dim == twin.feature_dim
    assert not torch.equal(tiny.unseen_embeddings, twin.unseen_embeddings)


@pytest.mark.parametrize("command", ["generate", "evaluate"])
def test_model_file_errors(root, tmp_path, command):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a model")
    extra = ["--output", tmp_path / "x.npz"] if command == "generate" else [
        "--dataset", "tiny", "--data-root", root]  # fmt: skip
    assert_clean_error(invoke(command, bad, *extra), "not a readable model file")
    assert_clean_error(invoke(command, tmp_path / "none.pt", *extra), "no such model file")
    assert not (tmp_path / "x.npz").exists()


def test_help_lists_every_command():
    result = invoke("--help")
    assert result.exit_code == 0
    listed = result.output.split("Commands:")[1].split()
    for command in ("bench", "train", "generate", "evaluate", "download", "datasets"):
        assert command in listed


def test_resuming_a_finished_val_run_twice_gives_identical_results(root, tmp_path):
    """A finished run resumed (twice) trains nothing more: the JSON is the same every time."""
    checkpoints = tmp_path / "ckpt"
    common = ["bench", "--dataset", "tiny", "--data-root", root, "--preset", "smoke",
              "--protocol", "val", "--device", "cpu", "--no-baselines",
              "--checkpoint-dir", checkpoints]  # fmt: skip
    outputs = []
    for index, extra in enumerate([[], ["--resume"], ["--resume"]]):
        path = tmp_path / f"run{index}.json"
        result = invoke(*common, *extra, "--output", path)
        assert result.exit_code == 0, result.output
        outputs.append(_without_seconds(json.loads(path.read_text())))
    assert outputs[1] == outputs[0]
    assert outputs[2] == outputs[0]


def test_table_shows_the_calibrated_baseline_beside_calibrated_gsmflow():
    result = _fake_result(0.30, 0.20, 0.45)
    result["calibrated"] = {
        "mean": {"S": 0.5, "U": 0.4, "H": 0.444, "T1": 0.4, "offset": 1.5},
        "std": {"S": 0.0, "U": 0.0, "H": 0.0, "T1": 0.0, "offset": 0.0},
    }
    scores = {"S": 0.6, "U": 0.5, "H": 0.545, "T1": 0.4}
    for entry in result["baselines"]["per_seed"]:
        entry["linear_gaussian_calibrated"] = {**scores, "seconds": 1.0, "offset": 2.0}
    result["baselines"]["mean"]["linear_gaussian_calibrated"] = {**scores, "offset": 2.0}
    result["baselines"]["std"]["linear_gaussian_calibrated"] = dict.fromkeys(scores, 0.0)
    table = format_table(BenchResult.from_dict(result))
    row = [line for line in table.splitlines() if line.startswith("lin.-Gauss. + calibrated")]
    assert len(row) == 1 and "54.5 ± 0.0" in row[0]
    assert "calibrated GSMFlow H 44.4 vs calibrated linear-Gaussian 54.5: -10.1" in table
    uncalibrated = format_table(BenchResult.from_dict(_fake_result(0.30, 0.20, 0.45)))
    assert "lin.-Gauss. + calibrated" not in uncalibrated


def test_dry_run_prints_the_plan_and_runs_nothing(root, tmp_path):
    output, checkpoints = tmp_path / "out.json", tmp_path / "ckpt"
    result = invoke("bench", "--dataset", "tiny", "--data-root", root, "--preset", "smoke",
                    "--device", "cpu", "--seeds", "3", "--protocol", "paper", "--dry-run",
                    "--output", output, "--checkpoint-dir", checkpoints)  # fmt: skip
    assert result.exit_code == 0, result.output
    # smoke: 40 iterations, evaluated every 20; 50 generated per unseen class
    assert "3 x (seeds 0-2)" in result.stdout
    assert "flow 40 iterations" in result.stdout and "2 evaluations" in result.stdout
    assert "2 unseen classes, 100 generated features x 16-d" in result.stdout
    assert "estimate:" in result.stdout
    assert "seed 0 flow" not in result.output  # no training
    assert not output.exists() and not list(checkpoints.glob("*.pt"))


def test_a_real_run_prints_its_plan_first_on_stderr(root):
    result = invoke("bench", "--dataset", "tiny", "--data-root", root, "--preset", "smoke",
                    "--device", "cpu", "--no-baselines")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "plan: TINY" in result.stderr and "plan:" not in result.stdout
    assert result.output.index("plan: TINY") < result.output.index("seed 0 flow")


def test_many_seeds_need_a_yes(root, tmp_path):
    output = tmp_path / "out.json"
    result = invoke("bench", "--dataset", "tiny", "--data-root", root, "--preset", "smoke",
                    "--device", "cpu", "--seeds", "1000", "--output", output)  # fmt: skip
    assert_clean_error(result, "--seeds 1000", "--yes")
    assert "seed 0 flow" not in result.output and not output.exists()
    dry = invoke("bench", "--dataset", "tiny", "--data-root", root, "--preset", "smoke",
                 "--device", "cpu", "--seeds", "1000", "--dry-run")  # fmt: skip
    assert dry.exit_code == 0 and "1000 x (seeds 0-999)" in dry.stdout


def test_train_prints_its_plan_and_dry_run_writes_no_model(root, tmp_path):
    model, logs = tmp_path / "m.pt", tmp_path / "logs"
    args = ["train", "--dataset", "tiny", "--data-root", root, "--preset", "smoke",
            "--device", "cpu", "--seed", "4", "--output", model, "--log-dir", logs]  # fmt: skip
    dry = invoke(*args, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "plan: TINY, preset smoke, training only, 1 x (seed 4)" in dry.stdout
    assert "flow 40 iterations on trainval, 40 features\n" in dry.stdout
    assert "each evaluation" not in dry.stdout and "baselines" not in dry.stdout
    assert not model.exists() and not logs.exists()
    real = invoke(*args)
    assert real.exit_code == 0, real.output
    assert "plan: TINY" in real.stderr and model.is_file()
