"""User errors are one ``Error:`` line; bugs keep their traceback; ``--debug`` shows both.

Also the exception hierarchy itself and that configuration is validated with ``ConfigError``.
"""

import errno
import subprocess
import sys

import pytest
import torch

import gsmflow_nflows
import gsmflow_nflows.cli.data as cli_data
import gsmflow_nflows.cli.run as cli_run
import gsmflow_nflows.data.download as download_module
from gsmflow_nflows.cli.main import INTERNAL_ERROR
from gsmflow_nflows.data import download_dataset, load_dataset
from gsmflow_nflows.errors import (
    CheckpointError,
    ConfigError,
    DatasetError,
    GSMFlowError,
    WriteError,
)
from gsmflow_nflows.evaluation.protocols import run_protocol
from gsmflow_nflows.experiment import BenchRequest, run_bench, seeds_from
from gsmflow_nflows.training.config import (
    EvaluationConfig,
    FlowTrainingConfig,
    GSMFlowConfig,
    MiningConfig,
    ModelConfig,
)
from gsmflow_nflows.training.model_io import MODEL_FORMAT
from gsmflow_nflows.training.presets import preset_config
from gsmflow_nflows.training.trainer import GSMFlowTrainer, resolve_device
from tests.cli.test_run import assert_clean_error, invoke
from tests.tiny_gzsl import load_tiny, make_tiny, tiny_config


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_tiny(tmp_path_factory.mktemp("errors-data"))


def _bench(root, *extra):
    return invoke(*extra, "bench", "--dataset", "tiny", "--data-root", root,
                  "--preset", "smoke", "--device", "cpu")  # fmt: skip


def _raise(error):
    def fail(*args, **kwargs):
        raise error

    return fail


def _error_lines(result):
    return [line for line in result.output.splitlines() if line.startswith("Error")]


# ---- (a) a bug is not a user error --------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [ValueError("internal"), OSError("internal"), TypeError("internal"), RuntimeError("internal")],
    ids=lambda error: type(error).__name__,
)
def test_bench_internal_error_keeps_its_traceback(root, monkeypatch, error):
    monkeypatch.setattr(cli_run, "load_dataset", _raise(error))
    result = _bench(root)
    assert result.exception is error, result.output  # propagated, not turned into SystemExit
    assert result.exception.__traceback__ is not None
    assert _error_lines(result) == [], result.output
    assert INTERNAL_ERROR in result.output


def test_train_internal_error_keeps_its_traceback(root, tmp_path, monkeypatch):
    error = ValueError("internal")
    monkeypatch.setattr(cli_run, "run_config", _raise(error))
    result = invoke("train", "--dataset", "tiny", "--data-root", root, "--preset", "smoke",
                    "--device", "cpu", "--output", tmp_path / "model.pt")  # fmt: skip
    assert result.exception is error
    assert "Error: internal" not in result.output
    assert INTERNAL_ERROR in result.output
    assert not (tmp_path / "model.pt").exists()


def test_internal_error_traceback_reaches_the_terminal(root, tmp_path):
    """Outside CliRunner: Python prints the traceback after the internal-error line."""
    script = (
        "import sys, gsmflow_nflows.cli.run as run\n"
        "from gsmflow_nflows.cli import main\n"
        "def fail(*a, **k): raise ValueError('internal')\n"
        "run.load_dataset = fail\n"
        f"main(['bench', '--dataset', 'tiny', '--data-root', {str(root)!r}], prog_name='gsmflow')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 1
    assert INTERNAL_ERROR in done.stderr
    assert "Traceback (most recent call last)" in done.stderr
    assert done.stderr.rstrip().endswith("ValueError: internal")
    assert not any(line.startswith("Error") for line in done.stderr.splitlines())


def test_download_internal_oserror_is_not_worded_as_a_user_error(tmp_path, monkeypatch):
    error = OSError("internal")
    monkeypatch.setattr(cli_data, "download_dataset", _raise(error))
    result = invoke("download", "apy", "--root", tmp_path)
    assert result.exception is error
    assert _error_lines(result) == []


# ---- (b) user errors: one line, no traceback ----------------------------------------------


class _OtherUserError(GSMFlowError):
    """A GSMFlowError that is neither a ValueError nor an OSError."""


@pytest.mark.parametrize(
    "error",
    [
        ConfigError("training.lr must be > 0, got -1."),
        DatasetError("TINY/res101.mat: missing key 'labels'"),
        CheckpointError("ckpt.pt: not a readable checkpoint"),
        WriteError("cannot write out.json: No space left on device."),
        _OtherUserError("a user error of another kind"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_every_gsmflow_error_is_one_clean_line(root, monkeypatch, error):
    monkeypatch.setattr(cli_run, "load_dataset", _raise(error))
    result = _bench(root)
    assert result.exit_code == 1
    assert_clean_error(result, str(error))
    assert _error_lines(result) == [f"Error: {error}"]


def test_bad_hyperparameter_in_a_model_file_is_one_clean_line(root, tmp_path):
    model = tmp_path / "model.pt"
    torch.save({"kind": MODEL_FORMAT, "config": {"training": {"lr": -1.0}}}, model)
    result = invoke("evaluate", model, "--dataset", "tiny", "--data-root", root,
                    "--device", "cpu")  # fmt: skip
    assert result.exit_code == 1
    assert_clean_error(result, "training.lr must be > 0, got -1.0")


def test_calibrate_with_another_protocol_is_one_clean_line(root):
    result = invoke("bench", "--dataset", "tiny", "--data-root", root, "--preset", "smoke",
                    "--protocol", "val", "--calibrate")  # fmt: skip
    assert_clean_error(result, "--calibrate works with --protocol final only, not 'val'")


def test_data_root_under_a_file_is_one_clean_line(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    result = invoke("bench", "--dataset", "synthetic", "--data-root", blocker / "sub",
                    "--preset", "smoke")  # fmt: skip
    assert result.exit_code == 1
    assert_clean_error(result, "cannot use the data root", "Not a directory")
    with pytest.raises(DatasetError, match="pass data_root= a folder you can read and write"):
        load_dataset("synthetic", data_root=blocker / "sub")


def test_unworded_local_oserror_of_a_download_is_worded_by_the_library(tmp_path, monkeypatch):
    denied = PermissionError(errno.EACCES, "Permission denied", str(tmp_path / ".downloads"))
    monkeypatch.setattr(download_module, "_make_dirs", _raise(denied))
    with pytest.raises(DatasetError, match="Permission denied") as info:
        download_dataset("apy", root=tmp_path, url="http://localhost:1/x.zip")
    assert info.value.__cause__ is denied
    result = invoke("download", "apy", "--root", tmp_path, "--url", "http://localhost:1/x.zip")
    assert_clean_error(result, "apy: Permission denied", f"data root {tmp_path}")


# ---- (c) --debug -------------------------------------------------------------------------


def test_debug_shows_the_traceback_of_a_user_error(root):
    plain = invoke("bench", "--dataset", "nosuch", "--data-root", root)
    assert_clean_error(plain, "unknown dataset 'nosuch'")

    result = invoke("--debug", "bench", "--dataset", "nosuch", "--data-root", root)
    assert result.exit_code == 1
    assert "Traceback (most recent call last)" in result.output
    assert "gsmflow_nflows.errors.DatasetError: unknown dataset 'nosuch'" in result.output
    assert "registry.py" in result.output  # where it was raised
    assert _error_lines(result) == _error_lines(plain)  # and the same one-line message
    assert result.output.rstrip().splitlines()[-1] == _error_lines(plain)[0]


def test_debug_shows_the_traceback_of_a_user_error_outside_a_command_body(root, monkeypatch):
    monkeypatch.setattr(cli_run, "check_outputs", _raise(WriteError("cannot write x: nope.")))
    result = _bench(root, "--debug")
    assert result.exit_code == 1
    assert "Traceback" in result.output and "WriteError: cannot write x: nope." in result.output
    assert _error_lines(result) == ["Error: cannot write x: nope."]


def test_debug_is_listed_in_the_help():
    result = invoke("--help")
    assert result.exit_code == 0 and "--debug" in result.output


# ---- (d) the hierarchy, and ConfigError where configuration is validated ----------------


def test_hierarchy():
    for error in (ConfigError, DatasetError, CheckpointError, WriteError):
        assert issubclass(error, GSMFlowError)
        assert getattr(gsmflow_nflows, error.__name__) is error
    assert gsmflow_nflows.GSMFlowError is GSMFlowError
    assert issubclass(GSMFlowError, Exception) and not issubclass(GSMFlowError, ValueError)
    for error in (ConfigError, DatasetError, CheckpointError):
        assert issubclass(error, ValueError)
    assert issubclass(WriteError, OSError)
    # the old import paths name the same classes
    from gsmflow_nflows.atomic_write import WriteError as old_write
    from gsmflow_nflows.data import DatasetError as old_dataset
    from gsmflow_nflows.data.errors import DatasetError as old_dataset_module
    from gsmflow_nflows.training import CheckpointError as old_checkpoint
    from gsmflow_nflows.training.checkpoint import CheckpointError as old_checkpoint_module

    assert old_write is WriteError and old_checkpoint is old_checkpoint_module is CheckpointError
    assert old_dataset is old_dataset_module is DatasetError


@pytest.mark.parametrize(
    "make, phrase",
    [
        (lambda: ModelConfig(num_blocks=0), "model.num_blocks must be a positive integer"),
        (lambda: ModelConfig(clamp=float("nan")), "model.clamp must be a finite number"),
        (lambda: ModelConfig(conditioning="both"), "model.conditioning must be one of"),
        (lambda: ModelConfig(scale_residual="yes"), "model.scale_residual must be true or false"),
        (lambda: ModelConfig(permutation="shuffle"), "model.permutation must be one of"),
        (lambda: FlowTrainingConfig(lr=-1.0), "training.lr must be > 0"),
        (lambda: FlowTrainingConfig(weight_decay=-1.0), "training.weight_decay must be >= 0"),
        (lambda: FlowTrainingConfig(perturbation_dropout=1.0), "perturbation_dropout must be < 1"),
        (lambda: MiningConfig(loops=-1), "mining.loops must be an integer >= 0"),
        (lambda: EvaluationConfig(classifier_min_steps=-1), "classifier_min_steps"),
        (lambda: EvaluationConfig(eval_start=-1), "evaluation.eval_start"),
        (lambda: GSMFlowConfig(seed=1.5), "seed must be an integer"),
        (lambda: GSMFlowConfig().ablate(["mining", "foo"]), "Unknown ablation ['foo']"),
        (lambda: GSMFlowConfig.from_dict({"bogus": 1}), "Not a GSMFlow config"),
        (lambda: GSMFlowConfig.from_dict({"model": {"blocks": 3}}), "Not a GSMFlow config"),
        (lambda: GSMFlowConfig.from_dict({"training": {"lr": 0}}), "training.lr must be > 0"),
        (lambda: preset_config("apy", None, "huge"), "Unknown preset 'huge'"),
        (lambda: seeds_from(0, 0), "must be a positive integer"),
        (lambda: run_bench(BenchRequest("tiny", protocol="best")), "Unknown protocol 'best'"),
        (lambda: run_bench(BenchRequest("tiny", precision="fp8")), "Unknown precision 'fp8'"),
        (
            lambda: run_bench(BenchRequest("tiny", protocol="val", calibrate=True)),
            "calibrate=True needs protocol 'final', not 'val'",
        ),
        (lambda: run_protocol("best", GSMFlowConfig(), None), "Unknown protocol 'best'"),
        (
            lambda: run_protocol("paper", GSMFlowConfig(), None, calibrate=True),
            "pass calibrate=False or protocol='final'",
        ),
        (lambda: resolve_device("tpu"), "Unknown device 'tpu'"),
    ],
)
def test_configuration_is_validated_with_config_error(make, phrase):
    with pytest.raises(ConfigError) as info:
        make()
    assert isinstance(info.value, ValueError)  # still caught by `except ValueError`
    assert phrase in str(info.value)
    assert "--" not in str(info.value)  # library messages use the API's names


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_unavailable_cuda_is_a_config_error():
    with pytest.raises(ConfigError, match="CUDA is not available; use device='cpu'"):
        resolve_device("cuda")


def test_trainer_settings_are_validated_with_config_error(root):
    data = load_tiny(root)
    with pytest.raises(ConfigError, match="Unknown precision"):
        GSMFlowTrainer(tiny_config(), data, device="cpu", precision="fp16")
    with pytest.raises(ConfigError, match="checkpoint_every"):
        GSMFlowTrainer(tiny_config(), data, device="cpu", checkpoint_every=0)
    big = tiny_config(training={"batch_size": data.num_train + 1})
    with pytest.raises(ConfigError, match="larger than the training set"):
        GSMFlowTrainer(big, data, device="cpu")
