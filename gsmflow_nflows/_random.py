"""Initialisation drawn from the caller's generator only: the global RNG is left alone.

Building an ``nn.Linear`` draws its default initialisation from torch's global
RNG. Code that then overwrites every parameter from its own generator builds
its modules inside :func:`keep_global_rng`, so the caller's random stream is the
same with or without the call.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


@contextmanager
def keep_global_rng(device: torch.device | None = None, *, enabled: bool = True) -> Iterator[None]:
    """Restore the global CPU random state (and ``device``'s, if CUDA) on exit.

    Example:
        >>> state = torch.get_rng_state()
        >>> with keep_global_rng():
        ...     _ = torch.nn.Linear(3, 2)
        >>> torch.equal(state, torch.get_rng_state())
        True
    """
    cuda = device is not None and torch.device(device).type == "cuda"
    devices = [torch.device(device).index or 0] if cuda else []
    with torch.random.fork_rng(devices=devices, enabled=enabled):
        yield


def reset_linear(layer: nn.Linear, generator: torch.Generator | None) -> None:
    """PyTorch's default ``Linear`` initialisation, drawn from ``generator``.

    Weight and bias ``~ U(-1/sqrt(in), 1/sqrt(in))``, drawn on the generator's
    device (CPU for ``None``) and copied into the layer.
    """
    device = generator.device if generator is not None else None
    bound = 1.0 / math.sqrt(layer.in_features)
    with torch.no_grad():
        for parameter in (layer.weight, layer.bias):
            if parameter is not None:
                draw = torch.rand(parameter.shape, generator=generator, device=device)
                parameter.copy_(draw * 2 * bound - bound)
