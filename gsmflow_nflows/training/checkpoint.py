"""Checkpoints: written atomically, checked on load against the run they should continue."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from gsmflow_nflows.atomic_write import write_atomically, write_with_fallback
from gsmflow_nflows.errors import CheckpointError

__all__ = ["FORMAT", "CheckpointError", "load_checkpoint", "save_checkpoint"]

FORMAT = "gsmflow-checkpoint/1"


def save_checkpoint(path: str | Path, state: dict[str, Any], *, fallback: bool = False) -> None:
    """Write ``state`` to ``path`` through a temporary file and an atomic rename.

    A crash, Ctrl-C or full disk mid-write leaves the previous checkpoint
    intact, never half a file nor a temporary file; missing folders are made.
    With ``fallback``, a failed write saves the state in the temporary folder
    instead (see :func:`gsmflow_nflows.atomic_write.write_with_fallback`).

    Raises:
        WriteError: the write failed (an ``OSError``; torch's ``RuntimeError``
            is turned into one); the message names the file and a fix.

    Example:
        >>> save_checkpoint("runs/ckpt.pt", {"iteration": 10})  # doctest: +SKIP
    """
    content = {"format": FORMAT, **state}
    write = write_with_fallback if fallback else write_atomically
    write(path, lambda stream: torch.save(content, stream), make_parents=True)


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
            "delete it, or start afresh instead of resuming."
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: not a gsmflow checkpoint (format {FORMAT} expected); "
            "delete it, or start afresh instead of resuming."
        )
    for key, value in expect.items():
        if state.get(key) != value:
            raise CheckpointError(
                f"{path}: made with a different {key} than this run; "
                "use the same options as the interrupted run, or delete the checkpoint."
            )
    return state
