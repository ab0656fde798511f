"""Where a run draws its random numbers from, and where it runs.

* **Named streams.** Every stage of a run draws from its own generator,
  ``seeded_generator(seed, Stream.X, ...)``, so that changing one stage (more
  mining loops, another evaluation point) leaves every other stage's numbers
  as they were, and nothing reads torch's global RNG.
* **Drawing on the generator's device.** :func:`randperm` and :func:`draw`
  draw on the generator's device (CPU for ``None``) and move the result to
  where it is used, so a CPU generator gives the same numbers for a CUDA run.
* **Initialisation from the caller's generator.** Building an ``nn.Linear``
  draws its default initialisation from torch's global RNG; code that then
  overwrites every parameter from its own generator builds its modules inside
  :func:`keep_global_rng`, so the caller's random stream is the same with or
  without the call (:func:`reset_linear` redraws the default initialisation).
* **The device**: :func:`resolve_device` turns ``None`` or a name into a
  device that exists on this machine.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from enum import IntEnum

import torch
from torch import Tensor, nn

from gsmflow_nflows.errors import ConfigError

__all__ = [
    "Stream",
    "draw",
    "keep_global_rng",
    "randperm",
    "reset_linear",
    "resolve_device",
    "seeded_generator",
    "synchronized_clock",
]


class Stream(IntEnum):
    """The random streams of one run; the values are part of every saved result's seed."""

    #: The relation network's initialisation (boundary sample mining).
    RELATION_INIT = 0
    #: The relation network's batch order.
    RELATION_BATCHES = 1
    #: The mining loops' batch order.
    MINING = 2
    #: The flow's initialisation (permutations, coupling nets).
    FLOW_INIT = 3
    #: The flow's batch order and its perturbation masks.
    FLOW_BATCHES = 4
    #: Generated unseen features at an evaluation (with the iteration).
    GENERATION = 5
    #: The GZSL classifier at an evaluation (with the iteration).
    GZSL_CLASSIFIER = 6
    #: The ZSL classifier at an evaluation (with the iteration).
    ZSL_CLASSIFIER = 7
    #: The seen-only baseline's classifier.
    SEEN_ONLY_BASELINE = 8
    #: The linear-Gaussian baseline (its features and classifiers).
    LINEAR_GAUSSIAN_BASELINE = 9
    #: Generated validation-unseen features for calibrated stacking.
    CALIBRATION_GENERATION = 10
    #: The classifier that calibrated stacking's offset is chosen on.
    CALIBRATION_CLASSIFIER = 11
    #: The linear-Gaussian baseline's validation features and classifier (its offset).
    CALIBRATED_BASELINE = 12


def seeded_generator(*parts: int) -> torch.Generator:
    """A CPU generator seeded from several integers: the seed, a :class:`Stream`, an iteration.

    Example:
        >>> a = seeded_generator(0, Stream.FLOW_INIT)
        >>> b = seeded_generator(0, Stream.FLOW_BATCHES)
        >>> bool(torch.rand(1, generator=a) == torch.rand(1, generator=b))
        False
    """
    seed = 0
    for part in parts:
        seed = (seed * 1_000_003 + int(part)) % (2**63 - 1)
    return torch.Generator().manual_seed(seed)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` -> CUDA if available, else CPU; a name is checked for availability.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"Unknown device {device!r}; use cpu, cuda or cuda:N.") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"Device {device!r} asked for, but CUDA is not available; use device='cpu'."
        )
    return resolved


def synchronized_clock(device: torch.device) -> float:
    """``time.perf_counter()`` once ``device``'s queued work is done (CUDA runs asynchronously).

    Example:
        >>> synchronized_clock(torch.device("cpu")) > 0
        True
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def randperm(n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """A random permutation of ``range(n)`` drawn with ``generator``, placed on ``device``.

    Example:
        >>> sorted(randperm(4, torch.Generator().manual_seed(0), torch.device("cpu")).tolist())
        [0, 1, 2, 3]
    """
    draw_device = generator.device if generator is not None else torch.device("cpu")
    return torch.randperm(n, generator=generator, device=draw_device).to(device)


def draw(
    kind: str, shape: tuple[int, ...], like: Tensor, generator: torch.Generator | None
) -> Tensor:
    """Normal (``"normal"``) or uniform numbers drawn on the generator's device, moved to ``like``.

    Example:
        >>> draw("uniform", (2,), torch.zeros(1, dtype=torch.float64), None).dtype
        torch.float64
    """
    device = generator.device if generator is not None else like.device
    sample = torch.randn if kind == "normal" else torch.rand
    return sample(shape, generator=generator, device=device, dtype=like.dtype).to(like.device)


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
    cuda = device is not None and device.type == "cuda"
    devices = [device.index or 0] if device is not None and cuda else []
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
