"""Loading a checkpoint or a model file never runs code stored in it (weights_only loading)."""

import pickle

import pytest
import torch

from gsmflow_nflows.training import CheckpointError
from gsmflow_nflows.training.checkpoint import FORMAT, load_checkpoint
from gsmflow_nflows.training.model_io import MODEL_FORMAT, load_model

RAN = []


def _mark(message):
    RAN.append(message)


class _Payload:
    """Unpickling this calls ``_mark``: the classic code-execution pickle."""

    def __reduce__(self):
        return (_mark, ("payload ran",))


def _write_hostile(path, header):
    torch.save({**header, "payload": _Payload()}, path)


def test_a_hostile_checkpoint_is_refused_without_running_its_code(tmp_path):
    path = tmp_path / "run.pt"
    _write_hostile(path, {"format": FORMAT})
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(path, expect={})
    assert RAN == []
    # the same file does run its code when unpickled blindly: the test can fail
    with open(path, "rb") as stream:
        torch.load(stream, weights_only=False)
    assert RAN == ["payload ran"]
    RAN.clear()


def test_a_hostile_model_file_is_refused_without_running_its_code(tmp_path):
    path = tmp_path / "model.pt"
    _write_hostile(path, {"kind": MODEL_FORMAT})
    with pytest.raises(CheckpointError):
        load_model(path)
    assert RAN == []


def test_a_plain_pickle_is_refused_too(tmp_path):
    path = tmp_path / "plain.pt"
    path.write_bytes(pickle.dumps(_Payload()))
    with pytest.raises(CheckpointError):
        load_checkpoint(path, expect={})
    assert RAN == []
