"""Checkpoints: written atomically, checked on load against the run they should continue."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gsmflow_nflows.atomic_write import write_atomically, write_with_fallback
from gsmflow_nflows.errors import CheckpointError

__all__ = [
    "FORMAT",
    "CheckpointError",
    "load_checkpoint",
    "load_mined",
    "mined_file",
    "save_checkpoint",
    "save_mined",
    "tensors_digest",
]

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


def mined_file(checkpoint: str | Path) -> Path:
    """Where the mined samples of the checkpoint ``checkpoint`` are kept: ``NAME.mined.pt``.

    Example:
        >>> mined_file("runs/final-test-seed0.pt").name
        'final-test-seed0.mined.pt'
    """
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(f"{checkpoint.stem}.mined{checkpoint.suffix or '.pt'}")


def tensors_digest(tensors: tuple[Tensor, ...]) -> str:
    """SHA-256 of the tensors' dtypes, shapes and bytes (CPU copies), in order.

    Example:
        >>> a = tensors_digest((torch.zeros(2),))
        >>> a == tensors_digest((torch.zeros(2),)), a == tensors_digest((torch.ones(2),))
        (True, False)
    """
    digest = hashlib.sha256()
    for tensor in tensors:
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{tensor.dtype}{tuple(tensor.shape)};".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def save_mined(path: str | Path, mined: tuple[Tensor, Tensor]) -> str:
    """Write the mined samples ``(features, labels)`` atomically to ``path``; return their digest.

    The mined samples do not change after mining, so a run writes them once and
    each checkpoint stores only their digest (:func:`load_mined` checks it): a
    checkpoint is then the size of the flow and optimizer, not of the data.

    Example:
        >>> digest = save_mined("runs/c.mined.pt", (features, labels))  # doctest: +SKIP
    """
    cpu = (mined[0].detach().cpu(), mined[1].detach().cpu())
    content = {"format": FORMAT, "kind": "mined", "features": cpu[0], "labels": cpu[1]}
    write_atomically(path, lambda stream: torch.save(content, stream), make_parents=True)
    return tensors_digest(cpu)


def load_mined(
    path: str | Path, digest: str | None, checkpoint: str | Path
) -> tuple[Tensor, Tensor] | None:
    """The mined samples saved by :func:`save_mined`, checked against ``digest``.

    Args:
        path: The mined-samples file.
        digest: What the checkpoint recorded; ``None``: the run mined nothing.
        checkpoint: The checkpoint that refers to them (named in errors).

    Raises:
        CheckpointError: the file is missing, unreadable, or holds other samples
            than the checkpoint was made with.
    """
    if digest is None:
        return None
    path = Path(path)
    fix = "delete both files to start the run again."
    if not path.is_file():
        raise CheckpointError(f"{checkpoint}: its mined samples {path} are missing; {fix}")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
        mined = (content["features"], content["labels"])
    except Exception as error:  # torch raises many types for a corrupt file
        raise CheckpointError(
            f"{path}: not readable mined samples ({type(error).__name__}); {fix}"
        ) from None
    if tensors_digest(mined) != digest:
        raise CheckpointError(
            f"{path}: holds other mined samples than {checkpoint} was made with; {fix}"
        )
    return mined
