"""``gsmflow bench``, ``train``, ``generate``, ``evaluate`` through click's CliRunner."""

import json
import statistics

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from gsmflow_nflows.cli import main
from gsmflow_nflows.data import load_dataset
from tests.tiny_gzsl import load_tiny, make_tiny

METRICS = ("S", "U", "H", "T1")


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
        assert set(arrays.files) == {"features", "labels", "class_ids"}
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
