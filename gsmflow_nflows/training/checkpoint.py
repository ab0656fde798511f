"""Checkpoints: written atomically, checked on load against the run they should continue."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

FORMAT = "gsmflow-checkpoint/1"


class CheckpointError(ValueError):
    """A checkpoint that cannot continue this run (corrupt, foreign or mismatched)."""


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` through a temporary file and an atomic rename.

    A crash mid-write leaves the previous checkpoint intact, never half a file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            torch.save({"format": FORMAT, **state}, stream)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path, *, expect: dict[str, Any]) -> dict[str, Any]:
    """Load a checkpoint and check that it belongs to the run described by ``expect``.

    Args:
        path: the checkpoint file.
        expect: entries that must be equal in the checkpoint (config, dataset signature).

    Returns:
        The saved state.

    Raises:
        CheckpointError: unreadable, not ours, or made for another config/dataset;
            the message names the file and what differs.
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a corrupt file
        raise CheckpointError(
            f"{path}: not a readable checkpoint ({type(error).__name__}); "
            "delete it or run without --resume."
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: not a gsmflow checkpoint (format {FORMAT} expected); "
            "delete it or run without --resume."
        )
    for key, value in expect.items():
        if state.get(key) != value:
            raise CheckpointError(
                f"{path}: made with a different {key} than this run; "
                "use the same options as the interrupted run, or delete the checkpoint."
            )
    return state
