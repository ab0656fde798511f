"""What a sweep ran with: package versions, the machine, the Ray cluster, the command line."""

from __future__ import annotations

import os
import platform
from collections.abc import Iterable
from importlib import metadata
from typing import Any

import torch

from gsmflow_nflows import __version__


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def environment(
    *,
    command: str | None,
    devices: Iterable[str],
    ray_version: str | None,
    cluster: dict[str, Any] | None,
) -> dict[str, Any]:
    """The ``environment`` section of a sweep's JSON.

    Args:
        command: the command line, as typed (``None`` from Python).
        devices: the devices trials reported (``"cpu"``, ``"cuda:0"`` ...).
        ray_version: Ray's version.
        cluster: ``ray.cluster_resources()`` (CPUs, GPUs of the whole cluster).

    Example:
        >>> environment(command=None, devices=["cpu"], ray_version=None, cluster=None)["device"]
        'cpu'
    """
    return {
        "gsmflow_nflows": __version__,
        "torch": torch.__version__,
        "nflows": _version("nflows"),
        "ray": ray_version,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "cluster": {key: cluster[key] for key in ("CPU", "GPU") if key in cluster}
        if cluster
        else None,
        "device": ", ".join(sorted(set(devices))) or None,
        "command": command,
    }
