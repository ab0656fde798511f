"""Output writes from the CLI: checked before the run, failures as one line, results kept.

Also ``--device`` and ``--seed`` validation, and SIGTERM during a checkpoint write.
"""

import os
import signal
import subprocess
import sys
import tempfile

import pytest
import torch

from gsmflow_nflows.cli.main import TERMINATED_STATUS
from gsmflow_nflows.cli.run import MAX_SEED
from gsmflow_nflows.training.model_io import load_model
from tests.cli.test_run import assert_clean_error, invoke
from tests.tiny_gzsl import make_tiny

needs_dev_full = pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_tiny(tmp_path_factory.mktemp("write-errors-data"))


@pytest.fixture(scope="module")
def model(root, tmp_path_factory):
    """A smoke model trained with the largest seed --seed accepts."""
    path = tmp_path_factory.mktemp("model") / "model.pt"
    result = invoke("train", "--dataset", "tiny", "--data-root", root, "--preset", "smoke",
                    "--device", "cpu", "--seed", MAX_SEED, "--output", path)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"seed {MAX_SEED}" in result.output
    return path


@pytest.fixture
def spare(tmp_path, monkeypatch):
    """The temporary folder, where results go when their own file cannot be written."""
    folder = tmp_path / "spare"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def _saved_to(result):
    error = next(line for line in result.output.splitlines() if line.startswith("Error"))
    return error.split("the results were saved to ")[1].removesuffix(" instead.")


def _leftovers(folder):
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith(".tmp"))


def test_bench_on_a_full_disk_is_one_error_line(root, tmp_path):
    """A real failed write (RLIMIT_FSIZE, SIGXFSZ ignored: EFBIG) in a separate process."""
    spare, out = tmp_path / "spare", tmp_path / "out"
    spare.mkdir(), out.mkdir()
    script = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (1024, resource.RLIM_INFINITY))\n"
        "from gsmflow_nflows.cli import main\n"
        "main(sys.argv[1:], prog_name='gsmflow')\n"
    )
    args = ["bench", "--dataset", "tiny", "--data-root", root, "--preset", "smoke",
            "--device", "cpu", "--no-baselines", "--output", out / "results.json"]  # fmt: skip
    env = {**os.environ, "TMPDIR": str(spare), "OMP_NUM_THREADS": "1",
           "PYTHONDONTWRITEBYTECODE": "1"}  # fmt: skip
    done = subprocess.run([sys.executable, "-c", script, *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, done.stderr
    assert errors[0].startswith(f"Error: cannot write {out / 'results.json'}: File too large")
    assert "failed too" in errors[0]  # the limit applies to the fallback file as well
    assert "TINY" in done.stdout  # the table was printed before the write
    assert list(out.iterdir()) == [] and list(spare.glob("gsmflow-*")) == []


@needs_dev_full
def test_bench_results_survive_a_failed_write(root, spare):
    result = invoke("bench", "--dataset", "tiny", "--data-root", root, "--preset", "smoke",
                    "--device", "cpu", "--no-baselines", "--output", "/dev/full")  # fmt: skip
    assert_clean_error(result, "cannot write /dev/full: No space left on device", str(spare))
    saved = _saved_to(result)
    assert saved.startswith(str(spare / "gsmflow-full-"))
    with open(saved) as stream:
        assert '"protocol": "final"' in stream.read()


@needs_dev_full
def test_train_model_survives_a_failed_write(root, spare):
    result = invoke("train", "--dataset", "tiny", "--data-root", root, "--preset", "smoke",
                    "--device", "cpu", "--output", "/dev/full")  # fmt: skip
    assert_clean_error(result, "cannot write /dev/full", "the results were saved to")
    flow, config, meta = load_model(_saved_to(result))
    assert meta["dataset"] == "TINY" and config.seed == 0


@needs_dev_full
def test_generate_features_survive_a_failed_write(model, spare):
    result = invoke("generate", model, "--output", "/dev/full", "--device", "cpu",
                    "--seed", MAX_SEED)  # fmt: skip
    assert_clean_error(result, "cannot write /dev/full", "the results were saved to")
    assert os.path.getsize(_saved_to(result)) > 0


def _full_disk_save(obj, stream):
    stream.write(b"partial")
    raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")


def test_a_failed_checkpoint_write_is_one_error_line(root, tmp_path, monkeypatch):
    checkpoints, output = tmp_path / "ckpt", tmp_path / "model.pt"
    monkeypatch.setattr(torch, "save", _full_disk_save)
    result = invoke("train", "--dataset", "tiny", "--data-root", root, "--preset", "smoke",
                    "--device", "cpu", "--checkpoint-dir", checkpoints, "--checkpoint-every", 10,
                    "--output", output)  # fmt: skip
    assert_clean_error(result, f"cannot write {checkpoints / 'train-seed0.pt'}", "disk full")
    assert not output.exists() and _leftovers(tmp_path) == []


def test_sigterm_during_a_checkpoint_write_leaves_no_temporary(root, tmp_path, monkeypatch):
    checkpoints = tmp_path / "ckpt"
    handler = signal.getsignal(signal.SIGTERM)

    def terminated_save(obj, stream):
        stream.write(b"partial")
        stream.flush()
        assert _leftovers(checkpoints)
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(torch, "save", terminated_save)
    result = invoke("train", "--dataset", "tiny", "--data-root", root, "--preset", "smoke",
                    "--device", "cpu", "--checkpoint-dir", checkpoints,
                    "--output", tmp_path / "model.pt")  # fmt: skip
    assert result.exit_code == TERMINATED_STATUS, result.output
    assert "Traceback" not in result.output
    assert list(checkpoints.iterdir()) == [] and not (tmp_path / "model.pt").exists()
    assert signal.getsignal(signal.SIGTERM) is handler  # put back when the command ended


@pytest.mark.parametrize("kind", ["read-only", "folder", "checkpoint-dir"])
def test_unwritable_outputs_fail_before_any_work(root, tmp_path, kind):
    output, checkpoints = tmp_path / "model.pt", tmp_path / "ckpt"
    phrases = {
        "read-only": ["cannot write", "read-only"],
        "folder": ["--output", "is a directory"],  # click's own check
        "checkpoint-dir": ["cannot write into", "not a folder"],
    }
    if kind == "read-only":
        output.write_text("keep")
        output.chmod(0o444)
    elif kind == "folder":
        output.mkdir()
    else:
        (tmp_path / "file").write_text("")
        checkpoints = tmp_path / "file" / "ckpt"
    result = invoke("train", "--dataset", "tiny", "--data-root", root, "--preset", "smoke",
                    "--device", "cpu", "--checkpoint-dir", checkpoints,
                    "--output", output)  # fmt: skip
    assert_clean_error(result, *phrases[kind])
    assert "flow" not in result.output  # no training started


def _unavailable_cuda():
    return f"cuda:{torch.cuda.device_count()}" if torch.cuda.is_available() else "cuda"


@pytest.mark.parametrize("device", ["mps", "meta", "tpu", "xla", "", "cuda:x", _unavailable_cuda()])
def test_unavailable_devices_are_one_clean_error(root, tmp_path, device):
    for command in (
        ["bench", "--dataset", "tiny", "--data-root", root, "--preset", "smoke"],
        ["generate", tmp_path / "model.pt", "--output", tmp_path / "x.npz"],
    ):
        result = invoke(*command, "--device", device)
        assert result.exit_code == 2, result.output
        assert_clean_error(result, "--device", "choose from cpu")
    assert list(tmp_path.iterdir()) == []


def test_cpu_spellings_are_accepted(model, tmp_path):
    for device in ("cpu", "cpu:0"):
        output = tmp_path / f"{device}.npz"
        result = invoke("generate", model, "--output", output, "--device", device)
        assert result.exit_code == 0, result.output


@pytest.mark.parametrize("seed", [-1, MAX_SEED + 1, 2**64, 10**30])
def test_seeds_out_of_range_are_one_clean_error(root, tmp_path, seed):
    for command in ("bench", "train"):
        result = invoke(command, "--dataset", "tiny", "--data-root", root, "--preset", "smoke",
                        "--seed", seed, "--output", tmp_path / "out")  # fmt: skip
        assert result.exit_code == 2, result.output
        assert_clean_error(result, "--seed")
    assert list(tmp_path.iterdir()) == []


def test_bench_seeds_past_the_range_are_one_clean_error(root, tmp_path):
    result = invoke("bench", "--dataset", "tiny", "--data-root", root, "--preset", "smoke",
                    "--seed", MAX_SEED, "--seeds", 2)  # fmt: skip
    assert result.exit_code == 2, result.output
    assert_clean_error(result, "--seeds", str(MAX_SEED + 1))


def test_generate_writes_through_a_symlinked_output(model, tmp_path):
    real, link = tmp_path / "real.npz", tmp_path / "link.npz"
    real.write_bytes(b"old")
    link.symlink_to(real)
    result = invoke("generate", model, "--output", link, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and real.read_bytes()[:2] == b"PK"  # an .npz (zip) now
    assert _leftovers(tmp_path) == []
