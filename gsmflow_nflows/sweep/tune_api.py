"""The one module that imports Ray, lazily: Ray Tune's API across Ray 2.9 to 2.x.

Ray is an optional extra (``pip install "gsmflow-nflows[sweep]"``); importing
``gsmflow_nflows`` or its CLI never imports it. Ray 2.41 moved the function-trainable
API (``report``, ``get_checkpoint``, ``Checkpoint``, ``RunConfig``) from ``ray.train``
to ``ray.tune``; :func:`require_ray` hands out whichever this Ray has.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from gsmflow_nflows.errors import GSMFlowError

#: The install command named by every "Ray is missing" error.
INSTALL_HINT = 'pip install "gsmflow-nflows[sweep]"'


class SweepError(GSMFlowError, RuntimeError):
    """A sweep that cannot run or go on (Ray missing, an interrupted run ...); one line."""


@dataclass(frozen=True)
class RayAPI:
    """What the sweep uses of Ray, from the right module for this Ray version."""

    ray: ModuleType
    tune: ModuleType
    report: Any
    get_checkpoint: Any
    Checkpoint: Any
    RunConfig: Any
    CheckpointConfig: Any

    @property
    def version(self) -> str:
        """Ray's version string."""
        return str(self.ray.__version__)


def require_ray() -> RayAPI:
    """Import Ray Tune, or raise :class:`SweepError` naming the extra to install.

    Example:
        >>> api = require_ray()  # doctest: +SKIP
        >>> api.version  # doctest: +SKIP
        '2.60.0'
    """
    try:
        import ray
        from ray import tune
    except ImportError as error:
        raise SweepError(
            f"gsmflow sweep needs Ray Tune, which is not installed ({error.name or error}); "
            f"install the extra: {INSTALL_HINT}"
        ) from None
    if hasattr(tune, "get_checkpoint"):  # Ray >= 2.41
        where: Any = tune
    else:  # pragma: no cover - older Ray
        from ray import train as where
    run_config = getattr(tune, "RunConfig", None) or where.RunConfig
    checkpoint_config = getattr(tune, "CheckpointConfig", None) or where.CheckpointConfig
    return RayAPI(
        ray=ray,
        tune=tune,
        report=where.report,
        get_checkpoint=where.get_checkpoint,
        Checkpoint=where.Checkpoint,
        RunConfig=run_config,
        CheckpointConfig=checkpoint_config,
    )


def start_ray(api: RayAPI, address: str | None) -> bool:
    """Connect to Ray: the cluster at ``address``, else a local one with this machine's CPUs.

    A Ray already initialised in this process (a test, a notebook) is used as it is.

    Returns:
        Whether this call started the connection (and should shut it down).

    Example:
        >>> started = start_ray(require_ray(), None)  # doctest: +SKIP
    """
    if api.ray.is_initialized():
        return False
    options: dict[str, Any] = {"include_dashboard": False, "logging_level": "WARNING"}
    if address is not None:
        api.ray.init(address=address, **options)
    else:
        # Trial output stays in the trials' logs; the driver prints one line per evaluation.
        api.ray.init(num_cpus=os.cpu_count() or 1, log_to_driver=False, **options)
    return True


class TuneSession:
    """The objective's link to Tune: report metrics with a checkpoint folder, find a restored one.

    :func:`gsmflow_nflows.sweep.objective.validation_trial` takes any object with
    these two methods, so tests can run it without Ray.
    """

    def __init__(self, api: RayAPI | None = None) -> None:
        self.api = api or require_ray()

    def report(self, metrics: dict[str, Any], folder: Path) -> None:
        """Report ``metrics`` to Tune with a copy of ``folder`` as the trial's checkpoint."""
        self.api.report(metrics, checkpoint=self.api.Checkpoint.from_directory(str(folder)))

    @contextmanager
    def restored(self) -> Iterator[Path | None]:
        """The folder of the checkpoint Tune restored this trial from, or ``None``."""
        checkpoint = self.api.get_checkpoint()
        if checkpoint is None:
            yield None
            return
        with checkpoint.as_directory() as folder:
            yield Path(folder)
