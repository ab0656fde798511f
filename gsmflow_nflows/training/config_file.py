"""Configs in files: a JSON config, or the ``config`` of a results JSON, read back for a replay."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gsmflow_nflows._checks import parse_json
from gsmflow_nflows.errors import ConfigError
from gsmflow_nflows.training.config import GSMFlowConfig

__all__ = ["parse_override", "read_config_file"]


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The config held by a JSON file, checked: a config, or a results JSON's ``config``.

    A config is what :meth:`GSMFlowConfig.to_dict` writes (``gsmflow config``
    prints one); a results JSON (``gsmflow bench --output``) holds the config
    its runs used under ``"config"``. Either replays a run exactly; sections or
    fields left out take their defaults.

    Args:
        path: the JSON file.

    Returns:
        The config as a dict (valid for :meth:`GSMFlowConfig.from_dict`).

    Raises:
        ConfigError: the file is missing, not JSON, or not a config; the message
            names the file and the problem.

    Example:
        >>> import tempfile
        >>> folder = tempfile.mkdtemp()
        >>> _ = (Path(folder) / "c.json").write_text('{"training": {"lr": 0.001}}')
        >>> read_config_file(Path(folder) / "c.json")["training"]["lr"]
        0.001
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such config file; give a JSON config (`gsmflow config` prints one) "
            "or a results JSON (`gsmflow bench --output`)."
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read the config file ({error}).") from None
    values = parse_json(text, path)
    if isinstance(values, dict) and "runs" in values:
        if not isinstance(values.get("config"), dict):
            raise ConfigError(
                f"{path}: a results JSON without its 'config'; it was not written by "
                "`gsmflow bench --output`, or was edited."
            )
        values = values["config"]
    if not isinstance(values, dict):
        raise ConfigError(
            f"{path}: a config must be a JSON object of sections (model, training, mining, "
            f"evaluation, seed), not a {type(values).__name__}."
        )
    try:
        GSMFlowConfig.from_dict(values)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
    return values


def parse_override(text: str) -> tuple[str, Any]:
    """``"section.field=value"`` as ``(key, value)``; the value is read as JSON if it can be.

    So ``training.lr=1e-3`` gives a float, ``mining.enabled=false`` a bool,
    ``model.conditioning=mean`` the string ``"mean"``. Whether the key and value
    are valid is checked where they are applied (:meth:`GSMFlowConfig.with_overrides`).

    Example:
        >>> parse_override("training.lr=1e-3")
        ('training.lr', 0.001)
        >>> parse_override("model.conditioning=mean")
        ('model.conditioning', 'mean')
    """
    key, equals, raw = text.partition("=")
    key = key.strip()
    if not equals or not key:
        raise ConfigError(
            f"Cannot read the setting {text!r}: write it as section.field=value "
            "(e.g. training.lr=1e-3)."
        )
    raw = raw.strip()
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key, value
