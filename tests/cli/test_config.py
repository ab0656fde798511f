"""Reproducing runs: --config (a config or results JSON), --set, gsmflow config, train+evaluate."""

import json
import sys

import pytest
import torch
from click.testing import CliRunner

from gsmflow_nflows.cli import main
from gsmflow_nflows.training import preset_config
from tests.tiny_gzsl import load_tiny, make_tiny

METRICS = ("S", "U", "H", "T1")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_tiny(tmp_path_factory.mktemp("config-data"))


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_clean_error(result, *phrases):
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, result.output
    for phrase in phrases:
        assert phrase in errors[0], errors[0]


def bench(root, out, *extra):
    result = invoke("bench", "--dataset", "tiny", "--data-root", root, "--device", "cpu",
                    "--no-baselines", "--output", out, *extra)  # fmt: skip
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text())


def test_config_prints_the_preset_with_the_settings_applied(root):
    result = invoke("config", "--dataset", "tiny", "--data-root", root, "--preset", "smoke",
                    "--set", "training.lr=0.002", "--set", "mining.enabled=false",
                    "--set", "model.permutation=null", "--seed", 7)  # fmt: skip
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    expected = preset_config("tiny", load_tiny(root), "smoke").to_dict()
    expected["training"]["lr"] = 0.002
    expected["mining"]["enabled"] = False
    expected["model"]["permutation"] = None
    expected["seed"] = 7
    assert printed == expected


@pytest.mark.parametrize(
    "args, phrases",
    [
        (["--set", "training.lrr=1"], ["Unknown setting 'training.lrr'", "choose from"]),
        (["--set", "training.lr"], ["section.field=value"]),
        (["--set", "training.lr=-1"], ["training.lr"]),
        (["--set", "mining.enabled=yes"], ["mining.enabled must be true or false"]),
        (["--set", "optim.lr=1"], ["Unknown setting 'optim.lr'"]),
    ],
)
@pytest.mark.parametrize("command", ["config", "bench", "train"])
def test_bad_settings_are_one_clean_line(root, tmp_path, command, args, phrases):
    extra = ["--output", tmp_path / "out"] if command != "config" else []
    result = invoke(command, "--dataset", "tiny", "--data-root", root, "--preset", "smoke",
                    *args, *extra)  # fmt: skip
    assert_clean_error(result, *phrases)
    assert not (tmp_path / "out").exists()


def test_bad_config_files_are_one_clean_line(root, tmp_path):
    common = ["config", "--dataset", "tiny", "--data-root", root, "--config"]
    assert_clean_error(invoke(*common, tmp_path / "none.json"), "no such config file")
    (tmp_path / "bad.json").write_text("{not json")
    assert_clean_error(invoke(*common, tmp_path / "bad.json"), "not valid JSON", "line 1")
    (tmp_path / "list.json").write_text("[1, 2]")
    assert_clean_error(invoke(*common, tmp_path / "list.json"), "JSON object")
    (tmp_path / "field.json").write_text('{"training": {"speed": 3}}')
    assert_clean_error(invoke(*common, tmp_path / "field.json"), "field.json", "speed")
    (tmp_path / "results.json").write_text('{"runs": []}')
    assert_clean_error(invoke(*common, tmp_path / "results.json"), "without its 'config'")


def test_replaying_a_results_json_gives_identical_numbers(root, tmp_path):
    first = bench(root, tmp_path / "a.json", "--preset", "smoke", "--seed", 3,
                  "--set", "training.lr=0.002")  # fmt: skip
    # the config records the seed the run used and the override
    assert first["config"]["seed"] == 3 and first["runs"][0]["seed"] == 3
    assert first["config"]["training"]["lr"] == 0.002
    # a replay from the results file, with a preset that would otherwise differ
    again = bench(root, tmp_path / "b.json", "--preset", "default", "--seed", 3,
                  "--config", tmp_path / "a.json")  # fmt: skip
    assert again["config"] == first["config"]
    for metric in METRICS:
        assert again["runs"][0][metric] == first["runs"][0][metric]
    # the printed config replays the same way
    printed = invoke("config", "--dataset", "tiny", "--data-root", root,
                     "--config", tmp_path / "a.json")  # fmt: skip
    (tmp_path / "c.json").write_text(printed.output)
    third = bench(root, tmp_path / "c2.json", "--seed", 3, "--config", tmp_path / "c.json")
    assert [third["runs"][0][m] for m in METRICS] == [first["runs"][0][m] for m in METRICS]
    # the replay ran the file's config, not the preset named beside it
    default = preset_config("tiny", load_tiny(root), "default").with_seed(3).to_dict()
    assert default != first["config"]
    # and --set still applies on top of a replayed config
    other = invoke("config", "--dataset", "tiny", "--data-root", root, "--config",
                   tmp_path / "a.json", "--set", "training.lr=0.02")  # fmt: skip
    assert json.loads(other.output)["training"]["lr"] == 0.02


def test_results_record_the_environment(root, tmp_path):
    values = bench(root, tmp_path / "a.json", "--preset", "smoke")
    environment = values["environment"]
    assert environment["torch"] == torch.__version__
    assert environment["python"] == ".".join(map(str, sys.version_info[:3]))
    assert environment["device"] == "cpu" and environment["nflows"]
    assert isinstance(environment["command"], list)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_train_then_evaluate_equals_bench_final(root, tmp_path, precision):
    model = tmp_path / "model.pt"
    args = ["--dataset", "tiny", "--data-root", root, "--preset", "smoke", "--device", "cpu",
            "--set", "evaluation.samples_per_class=30", "--precision", precision]  # fmt: skip
    result = invoke("train", *args, "--seed", 5, "--output", model)
    assert result.exit_code == 0, result.output
    result = invoke("evaluate", model, "--dataset", "tiny", "--data-root", root,
                    "--device", "cpu", "--precision", precision,
                    "--output", tmp_path / "e.json")  # fmt: skip
    assert result.exit_code == 0, result.output
    evaluated = json.loads((tmp_path / "e.json").read_text())
    benched = bench(root, tmp_path / "b.json", *args[4:], "--preset", "smoke", "--seed", 5,
                    "--protocol", "final")  # fmt: skip
    assert evaluated["config"] == benched["config"]
    run, reference = evaluated["runs"][0], benched["runs"][0]
    for key in (*METRICS, "seed", "iteration", "classifier_epoch", "t1_epoch"):
        assert run[key] == reference[key], key


@pytest.mark.parametrize("protocol", ["final", "val"])
def test_per_class_accuracies_average_to_s_and_u(root, tmp_path, protocol):
    values = bench(root, tmp_path / "a.json", "--preset", "smoke", "--protocol", protocol,
                   "--set", "evaluation.samples_per_class=30")  # fmt: skip
    run = values["runs"][0]
    data = load_tiny(root)
    rows = run["per_class"]
    seen = [row for row in rows if row["split"] == "seen"]
    unseen = [row for row in rows if row["split"] == "unseen"]
    assert [row["class"] for row in seen] == data.seen_classes.tolist()
    assert [row["class"] for row in unseen] == data.unseen_classes.tolist()
    assert all(row["name"] == data.class_names[row["class"]] for row in rows)
    assert sum(row["accuracy"] for row in seen) / len(seen) == pytest.approx(run["S"])
    assert sum(row["accuracy"] for row in unseen) / len(unseen) == pytest.approx(run["U"])


def test_evaluate_output_has_per_class(root, tmp_path):
    model = tmp_path / "m.pt"
    args = ["--dataset", "tiny", "--data-root", root, "--device", "cpu"]
    assert invoke("train", *args, "--preset", "smoke", "--output", model).exit_code == 0
    result = invoke("evaluate", model, *args, "--output", tmp_path / "e.json")
    assert result.exit_code == 0, result.output
    run = json.loads((tmp_path / "e.json").read_text())["runs"][0]
    unseen = [row["accuracy"] for row in run["per_class"] if row["split"] == "unseen"]
    assert sum(unseen) / len(unseen) == pytest.approx(run["U"])


def test_semantic_picks_another_splits_file(root, tmp_path):
    """--semantic KEY reads <KEY>_splits.mat: other class vectors, named in JSON and table."""
    import shutil

    import numpy as np
    import scipy.io

    folder = tmp_path / "TINY"
    shutil.copytree(root / "TINY", folder)
    splits = scipy.io.loadmat(folder / "att_splits.mat")
    rng = np.random.default_rng(0)
    other = rng.random((9, splits["att"].shape[1]))  # 9-d class vectors instead of 5-d
    splits["att"] = other / np.linalg.norm(other, axis=0, keepdims=True)
    scipy.io.savemat(
        folder / "sent_splits.mat", {k: v for k, v in splits.items() if not k.startswith("__")}
    )
    out = tmp_path / "s.json"
    result = invoke("bench", "--dataset", "tiny", "--data-root", tmp_path, "--preset", "smoke",
                    "--device", "cpu", "--no-baselines", "--semantic", "sent",
                    "--output", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "class vectors sent" in result.output
    values = json.loads(out.read_text())
    assert values["semantic"] == "sent"
    plain = bench(tmp_path, tmp_path / "a.json", "--preset", "smoke")
    assert plain["semantic"] == "att"
    model = tmp_path / "m.pt"
    args = ["--dataset", "tiny", "--data-root", tmp_path, "--device", "cpu"]
    assert invoke("train", *args, "--preset", "smoke", "--semantic", "sent",
                  "--output", model).exit_code == 0  # fmt: skip
    # the model knows its 9-d class vectors: evaluating with the 5-d ones is refused
    assert_clean_error(invoke("evaluate", model, *args), "the model was trained on")
    result = invoke("evaluate", model, *args, "--semantic", "sent")
    assert result.exit_code == 0, result.output
    missing = invoke("bench", *args, "--preset", "smoke", "--semantic", "w2v", "--output",
                     tmp_path / "x.json")  # fmt: skip
    assert_clean_error(missing, "w2v")


def test_cub_paper_preset_defaults_to_sentence_embeddings():
    from gsmflow_nflows.experiment import semantic_for

    assert semantic_for("CUB", "paper") == "sent"
    assert semantic_for("cub", "default") == "att"
    assert semantic_for("apy", "paper") == "att"
    assert semantic_for("CUB", "paper", "att") == "att"
