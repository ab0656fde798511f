"""Search spaces, checked before Ray starts; the CLI without Ray. No Ray needed here."""

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from gsmflow_nflows.cli import main
from gsmflow_nflows.data import load_dataset
from gsmflow_nflows.sweep.adapter import length_field, trainval_preset
from gsmflow_nflows.sweep.space import (
    SpaceError,
    apply_overrides,
    check_space,
    default_space,
    load_space,
    parse_space,
)
from gsmflow_nflows.training.config import GSMFlowConfig


def _error(values) -> str:
    with pytest.raises(SpaceError) as raised:
        parse_space(values, where="space.json")
    message = str(raised.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    "values, phrases",
    [
        ({"training.epoch": {"randint": [1, 9]}}, ["'training.epoch'",
                                                   "did you mean 'training.epochs'"]),
        ({"training.learning_rate": {"uniform": [0, 1]}}, ["no field 'learning_rate'", " lr,"]),
        ({"optimizer.lr": {"uniform": [0, 1]}}, ["unknown section 'optimizer'", "model"]),
        ({"lr": {"uniform": [0, 1]}}, ["'lr' is not 'section.field'", "training.lr"]),
        ({"seed": {"randint": [0, 3]}}, ["seed is not searched"]),
        ({"training.lr": {"normal": [0, 1]}}, ["unknown domain 'normal'", "loguniform"]),
        ({"training.lr": {"loguniform": [1e-3, 1e-4]}}, ["low < high", "swap them"]),
        ({"training.lr": {"loguniform": [0, 1e-3]}}, ["low > 0", "use uniform"]),
        ({"training.lr": {"uniform": [1, 1]}}, ["low < high", "use choice"]),
        ({"training.lr": {"uniform": [0, "1"]}}, ["two finite numbers"]),
        ({"training.lr": {"uniform": [0, float("inf")]}}, ["two finite numbers"]),
        ({"training.epochs": {"randint": [10, 5.5]}}, ["must be integers"]),
        ({"training.epochs": {"randint": [10, 5]}}, ["low <= high"]),
        ({"model.conditioning": {"choice": []}}, ["non-empty list"]),
        ({"training.lr": {"uniform": [0, 1], "choice": [1]}}, ["one domain"]),
        ({"training.lr": 1e-3}, ["one domain"]),
        ({}, ["non-empty JSON object"]),
        ([], ["non-empty JSON object"]),
    ],
)  # fmt: skip
def test_parse_space_refuses_with_one_line_naming_the_key(values, phrases):
    message = _error(values)
    assert message.startswith("space.json")
    for phrase in phrases:
        assert phrase in message, message


def test_parse_space_keeps_good_domains_in_order():
    values = {
        "evaluation.samples_per_class": {"randint": [50, 200]},
        "training.lr": {"loguniform": [1e-4, 1e-3]},
        "model.conditioning": {"choice": ["mean", "couplings"]},
        "model.permutation": {"choice": [None, "random"]},
        "training.prototype_weight": {"uniform": [0, 3]},
    }
    assert parse_space(values) == values
    assert list(parse_space(values)) == list(values)


@pytest.mark.parametrize(
    "space, phrases",
    [
        ({"training.epochs": {"uniform": [10, 20]}}, ["integer field", '{"randint": [10, 20]}']),
        ({"training.lr": {"uniform": [-1, 1]}}, ["-1.0", "training.lr must be > 0"]),
        ({"model.conditioning": {"choice": ["mean", "film"]}}, ["'film'", "conditioning"]),
        ({"training.perturbation_dropout": {"uniform": [0, 1]}}, ["must be < 1"]),
        ({"model.scale_residual": {"choice": [True, 1]}}, ["true or false"]),
    ],
)  # fmt: skip
def test_check_space_applies_every_end_through_the_config(space, phrases):
    parse_space(space)  # the form is fine; only the config refuses
    with pytest.raises(SpaceError) as raised:
        check_space(space, GSMFlowConfig())
    for phrase in phrases:
        assert phrase in str(raised.value), str(raised.value)


def test_overrides_go_through_from_dict_and_numpy_scalars_become_python():
    config = apply_overrides(
        GSMFlowConfig(), {"training.epochs": np.int64(7), "training.lr": np.float64(2e-3)}
    )
    assert config.training.epochs == 7 and type(config.training.epochs) is int
    assert config.training.lr == 2e-3
    with pytest.raises(ValueError, match="training.epochs must be a positive integer"):
        apply_overrides(GSMFlowConfig(), {"training.epochs": 0})


def test_load_space_reports_bad_json_and_missing_files(tmp_path):
    path = tmp_path / "space.json"
    path.write_text('{"training.lr": {"uniform": [0, 1]},}')
    with pytest.raises(SpaceError, match="not valid JSON .line 1"):
        load_space(path)
    with pytest.raises(SpaceError, match="cannot read the space file"):
        load_space(tmp_path / "missing.json")


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("digits"))
    return root, load_dataset("digits", data_root=root, split="val")


@pytest.mark.parametrize("preset", ["smoke", "quick"])
def test_default_space_brackets_the_presets_values(digits, preset):
    root, val_data = digits
    base = trainval_preset("digits", root, preset)
    field = length_field(base, val_data)
    space = default_space(base, validation_length_field=field)
    # smoke caps the run at 40 iterations; quick's epochs set the validation run's length
    assert field == {"smoke": "training.max_iterations", "quick": "training.epochs"}[preset]
    length = getattr(base.training, field.split(".")[1])
    assert space[field] == {"randint": [-(-length // 2), 2 * length]}
    low, high = space["training.lr"]["loguniform"]
    assert low == pytest.approx(base.training.lr / 3)
    assert high == pytest.approx(3 * base.training.lr)
    low, high = space["evaluation.classifier_lr"]["loguniform"]
    assert low < base.evaluation.classifier_lr < high
    low, high = space["evaluation.samples_per_class"]["randint"]
    assert low < base.evaluation.samples_per_class < high
    check_space(space, base)  # the default space is a valid space


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _one_error_line(result, *phrases):
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    for phrase in phrases:
        assert phrase in errors[0], errors[0]


def test_cli_bad_space_file_is_one_error_line_before_anything_runs(tmp_path):
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"training.lr": {"gaussian": [0, 1]}}))
    result = _invoke("sweep", "--dataset", "digits", "--data-root", tmp_path / "data", "--space",
                     space, "--trials", 2, "--output", tmp_path / "out.json")  # fmt: skip
    _one_error_line(result, str(space), "'training.lr'", "unknown domain 'gaussian'")
    assert not (tmp_path / "data").exists()  # refused before any data was loaded
    assert not (tmp_path / "out.tune").exists()


def test_cli_without_ray_names_the_extra(tmp_path, monkeypatch):
    # A None entry makes `import ray` raise ImportError, as when Ray is not installed.
    for name in ("ray", "ray.tune", "ray.train"):
        monkeypatch.setitem(sys.modules, name, None)
    for command in (
        ["sweep", "--dataset", "digits", "--trials", 2],
        ["table", "--datasets", "digits"],
    ):
        result = _invoke(*command, "--data-root", tmp_path, "--output", tmp_path / "out.json")
        _one_error_line(result, "Ray Tune", 'pip install "gsmflow-nflows[sweep]"')


def test_the_package_and_its_cli_do_not_import_ray():
    code = (
        "import sys, gsmflow_nflows, gsmflow_nflows.cli, gsmflow_nflows.sweep.run, "
        "gsmflow_nflows.sweep.grid; print('ray' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
