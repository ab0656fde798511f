"""Input checks shared by the transforms, the encoder and the model factory.

Every check raises a one-line ``ValueError``/``TypeError`` naming what was
expected and what came, before any computation. Checks are skipped while
``torch.compile`` traces, so they never break a compiled graph.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _tracing() -> bool:
    return torch.compiler.is_compiling()


def check_tensor(value: object, name: str) -> Tensor:
    """Return ``value`` if it is a floating-point tensor, else raise ``TypeError``."""
    if not isinstance(value, Tensor):
        raise TypeError(f"Expected {name} to be a torch.Tensor, got {type(value).__name__}.")
    if not value.is_floating_point():
        raise TypeError(f"Expected {name} to be a floating-point tensor, got dtype {value.dtype}.")
    return value


def check_matrix(value: object, name: str, columns: int | None = None) -> Tensor:
    """Check that ``value`` is a finite float tensor of shape ``[rows, columns]``."""
    tensor = check_tensor(value, name)
    if _tracing():
        return tensor
    if tensor.dim() != 2:
        expected = f"[batch, {columns}]" if columns is not None else "[rows, columns]"
        raise ValueError(f"Expected {name} of shape {expected}, got shape {list(tensor.shape)}.")
    if columns is not None and tensor.shape[1] != columns:
        raise ValueError(f"Expected {name} with {columns} features, got {tensor.shape[1]}.")
    check_finite(tensor, name)
    return tensor


def check_finite(tensor: Tensor, name: str) -> None:
    """Raise ``ValueError`` if ``tensor`` holds NaN or infinite values."""
    if _tracing():
        return
    if not bool(torch.isfinite(tensor).all()):
        bad = int((~torch.isfinite(tensor)).sum())
        raise ValueError(
            f"{name} holds {bad} non-finite values (NaN or inf); clean or impute them first."
        )


def check_same_batch(inputs: Tensor, context: Tensor, context_name: str = "context") -> None:
    """Raise ``ValueError`` unless ``inputs`` and ``context`` have the same batch size."""
    if _tracing():
        return
    if context.shape[0] != inputs.shape[0]:
        raise ValueError(
            f"Expected {context_name} with one row per input ({inputs.shape[0]}), "
            f"got {context.shape[0]} rows."
        )
