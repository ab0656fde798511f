"""Search spaces of ``gsmflow sweep``: parsed, checked and applied without Ray.

A space maps ``section.field`` of :class:`~gsmflow_nflows.training.config.GSMFlowConfig`
(``training.lr``, ``evaluation.samples_per_class`` ...) to one domain:

* ``{"uniform": [a, b]}``: a float in ``[a, b]``;
* ``{"loguniform": [a, b]}``: a float in ``[a, b]``, uniform in ``log``; ``a > 0``;
* ``{"randint": [a, b]}``: an integer from ``a`` to ``b``, **both included**;
* ``{"choice": [v1, v2, ...]}``: one of the listed JSON values (``null`` is ``None``).

Everything is checked before Ray starts (:func:`parse_space` for the form,
:func:`check_space` for the values, through :meth:`GSMFlowConfig.from_dict`), and every
error is one line naming the key and the fix.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gsmflow_nflows._checks import parse_json
from gsmflow_nflows.errors import ConfigError
from gsmflow_nflows.training.config import (
    EvaluationConfig,
    FlowTrainingConfig,
    GSMFlowConfig,
    MiningConfig,
    ModelConfig,
)

#: The config sections a space may search, and their dataclasses.
SECTIONS = {
    "model": ModelConfig,
    "training": FlowTrainingConfig,
    "mining": MiningConfig,
    "evaluation": EvaluationConfig,
}
#: The domain kinds, with what their value must be.
DOMAINS = {
    "uniform": "[low, high]",
    "loguniform": "[low, high] with low > 0",
    "randint": "[low, high] (integers, both included)",
    "choice": "[value, ...]",
}

#: A parsed space: ``section.field -> {kind: value}``, in the file's order.
Space = dict[str, dict[str, Any]]


class SpaceError(ConfigError):
    """A search space that cannot be searched; the message names the key and the fix."""


def _fields(section: str) -> dict[str, dataclasses.Field[Any]]:
    return {field.name: field for field in dataclasses.fields(SECTIONS[section])}


def _check_key(key: object, where: str) -> tuple[str, str]:
    if not isinstance(key, str) or key.count(".") != 1:
        hint = " (the seed is not searched: see the seed options)" if key == "seed" else ""
        raise SpaceError(
            f"{where}: key {key!r} is not 'section.field'{hint}; use one of the sections "
            f"{', '.join(SECTIONS)}, e.g. 'training.lr'."
        )
    section, name = key.split(".")
    if section not in SECTIONS:
        raise SpaceError(
            f"{where}: {key!r}: unknown section {section!r}; choose from {', '.join(SECTIONS)}."
        )
    fields = _fields(section)
    if name not in fields:
        close = difflib.get_close_matches(name, list(fields), n=1)
        hint = f"did you mean '{section}.{close[0]}'? " if close else ""
        raise SpaceError(
            f"{where}: {key!r}: {section} has no field {name!r}; {hint}"
            f"its fields are {', '.join(fields)}."
        )
    return section, name


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_domain(key: str, domain: object, where: str) -> dict[str, Any]:
    kinds = ", ".join(DOMAINS)
    if not isinstance(domain, dict) or len(domain) != 1:
        raise SpaceError(
            f"{where}: {key!r} must be an object with one domain, e.g. "
            f'{{"loguniform": [1e-4, 1e-3]}}; the domains are {kinds}.'
        )
    ((kind, value),) = domain.items()
    if kind not in DOMAINS:
        close = difflib.get_close_matches(str(kind), list(DOMAINS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise SpaceError(f"{where}: {key!r}: unknown domain {kind!r}{hint}; use one of {kinds}.")
    if kind == "choice":
        if not isinstance(value, list) or not value:
            raise SpaceError(f"{where}: {key!r}: choice needs a non-empty list of values.")
        if any(isinstance(v, (list, dict)) for v in value):
            raise SpaceError(f"{where}: {key!r}: choice values must be numbers, strings, "
                             "true/false or null, not lists or objects.")  # fmt: skip
        return {kind: list(value)}
    if not isinstance(value, list) or len(value) != 2 or not all(map(_finite, value)):
        raise SpaceError(
            f"{where}: {key!r}: {kind} needs two finite numbers {DOMAINS[kind]}, got {value!r}."
        )
    low, high = value
    if kind == "randint":
        if not all(isinstance(v, int) for v in value):
            raise SpaceError(f"{where}: {key!r}: randint bounds must be integers, got {value!r}.")
        if low > high:
            raise SpaceError(
                f"{where}: {key!r}: randint needs low <= high, got [{low}, {high}]; swap them."
            )
    elif low >= high:
        raise SpaceError(
            f"{where}: {key!r}: {kind} needs low < high, got [{low}, {high}]; "
            + ("swap them." if low > high else "use choice for a single value.")
        )
    if kind == "loguniform" and low <= 0:
        raise SpaceError(
            f"{where}: {key!r}: loguniform needs low > 0, got {low}; use uniform for a range "
            "that reaches 0."
        )
    return {kind: [low, high]}


def parse_space(values: object, *, where: str = "search space") -> Space:
    """Check the form of a search space (keys, domain kinds, bounds); no config is built.

    Args:
        values: the decoded JSON object.
        where: how error messages name the space (the file's name).

    Returns:
        The space, ``section.field -> {kind: value}``.

    Raises:
        SpaceError: an unknown section or field, an unknown domain, bad bounds.

    Example:
        >>> parse_space({"training.lr": {"loguniform": [1e-4, 1e-3]}})
        {'training.lr': {'loguniform': [0.0001, 0.001]}}
        >>> parse_space({"training.learning_rate": {"uniform": [0, 1]}})
        Traceback (most recent call last):
        ...
        gsmflow_nflows.sweep.space.SpaceError: search space: 'training.learning_rate': \
training has no field 'learning_rate'; ...
    """
    if not isinstance(values, dict) or not values:
        raise SpaceError(
            f"{where}: must be a non-empty JSON object mapping 'section.field' to a domain, "
            'e.g. {"training.lr": {"loguniform": [1e-4, 1e-3]}}.'
        )
    space: Space = {}
    for key, domain in values.items():
        _check_key(key, where)
        space[key] = _check_domain(key, domain, where)
    return space


def load_space(path: str | Path) -> Space:
    """Read and :func:`parse_space` a JSON space file; unreadable or bad JSON is a SpaceError.

    Example:
        >>> load_space("space.json")  # doctest: +SKIP
        {'training.lr': {'loguniform': [0.0001, 0.001]}}
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise SpaceError(f"cannot read the space file {path}: {error.strerror or error}.") from None
    return parse_space(parse_json(text, path, SpaceError), where=str(path))


def plain(value: Any) -> Any:
    """A sampled value as a plain Python scalar (Tune's samplers may return numpy scalars).

    Example:
        >>> import numpy as np
        >>> type(plain(np.int64(3)))
        <class 'int'>
    """
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return value.item()
    return value


def apply_overrides(config: GSMFlowConfig, overrides: Mapping[str, Any]) -> GSMFlowConfig:
    """``config`` with ``section.field`` values replaced, rebuilt by ``GSMFlowConfig.from_dict``.

    So every value passes the config's own validation.

    Example:
        >>> apply_overrides(GSMFlowConfig(), {"training.lr": 1e-3}).training.lr
        0.001
    """
    values = config.to_dict()
    for key, value in overrides.items():
        section, name = _check_key(key, "overrides")
        values[section][name] = plain(value)
    return GSMFlowConfig.from_dict(values)


def _candidates(domain: dict[str, Any]) -> list[Any]:
    """The values that stand for a domain when checking it: its ends (and a float inside)."""
    ((kind, value),) = domain.items()
    if kind == "choice":
        return list(value)
    low, high = value
    if kind == "randint":
        return [low, high]
    return [float(low), float(high), (float(low) + float(high)) / 2]


def check_space(space: Space, config: GSMFlowConfig, *, where: str = "search space") -> None:
    """Check that every value a domain can give is a valid config (``from_dict``'s checks).

    Each key is applied alone to ``config`` at its domain's ends (every choice); a
    float domain on an integer field, a negative rate, an unknown conditioning ...
    are refused here rather than in a trial.

    Raises:
        SpaceError: naming the key, the value and the config's own message.

    Example:
        >>> check_space({"training.epochs": {"uniform": [10, 20]}}, GSMFlowConfig())
        Traceback (most recent call last):
        ...
        gsmflow_nflows.sweep.space.SpaceError: search space: 'training.epochs' is an integer \
field; use {"randint": [10, 20]} instead of uniform.
    """
    for key, domain in space.items():
        section, name = _check_key(key, where)
        ((kind, value),) = domain.items()
        annotation = str(_fields(section)[name].type)
        if kind in ("uniform", "loguniform") and annotation.startswith("int"):
            low, high = (math.ceil(value[0]), math.floor(value[1]))
            raise SpaceError(
                f'{where}: {key!r} is an integer field; use {{"randint": [{low}, {high}]}} '
                f"instead of {kind}."
            )
        for candidate in _candidates(domain):
            try:
                apply_overrides(config, {key: candidate})
            except ValueError as error:
                raise SpaceError(
                    f"{where}: {key!r}: {kind} can give {candidate!r}, which the config refuses "
                    f"({str(error).rstrip('.')}); change its bounds."
                ) from None


def _domain_around(kind: str, value: float, low: float, high: float) -> dict[str, Any]:
    if kind == "randint":
        return {kind: [max(1, math.ceil(value * low)), max(1, round(value * high))]}
    return {kind: [value * low, value * high]}


def default_space(config: GSMFlowConfig, *, validation_length_field: str) -> Space:
    """The space searched without ``--space``: four fields, bounds around the preset's values.

    * ``training.lr`` (the flow's Adam rate): loguniform, preset x [1/3, 3];
    * the run's length, ``validation_length_field``: ``training.epochs`` or
      ``training.max_iterations``, whichever sets the validation run's length
      (see :func:`gsmflow_nflows.sweep.adapter.length_field`): randint, preset x [1/2, 2];
    * ``evaluation.samples_per_class`` (generated features per unseen class): randint,
      preset x [1/2, 2];
    * ``evaluation.classifier_lr`` (the softmax classifier's Adam rate): loguniform,
      preset x [1/3, 3].

    Example:
        >>> space = default_space(GSMFlowConfig(), validation_length_field="training.epochs")
        >>> space["training.epochs"], space["evaluation.samples_per_class"]
        ({'randint': [300, 1200]}, {'randint': [4500, 18000]})
    """
    if validation_length_field not in ("training.epochs", "training.max_iterations"):
        raise ValueError(f"not a length field: {validation_length_field!r}")
    length = getattr(config.training, validation_length_field.split(".")[1])
    if length is None:
        raise ValueError(f"the preset leaves {validation_length_field} unset; search epochs.")
    return {
        "training.lr": _domain_around("loguniform", config.training.lr, 1 / 3, 3),
        validation_length_field: _domain_around("randint", length, 1 / 2, 2),
        "evaluation.samples_per_class": _domain_around(
            "randint", config.evaluation.samples_per_class, 1 / 2, 2
        ),
        "evaluation.classifier_lr": _domain_around(
            "loguniform", config.evaluation.classifier_lr, 1 / 3, 3
        ),
    }


def to_tune(space: Space, tune: Any) -> dict[str, Any]:
    """The space as Tune domains (``tune`` is the ``ray.tune`` module; randint's high included).

    Example:
        >>> from ray import tune  # doctest: +SKIP
        >>> to_tune({"training.epochs": {"randint": [2, 4]}}, tune)  # doctest: +SKIP
        {'training.epochs': <ray.tune.search.sample.Integer object at ...>}
    """
    domains: dict[str, Any] = {}
    for key, domain in space.items():
        ((kind, value),) = domain.items()
        if kind == "choice":
            domains[key] = tune.choice(list(value))
        elif kind == "randint":
            domains[key] = tune.randint(value[0], value[1] + 1)  # Tune's high is excluded
        else:
            domains[key] = getattr(tune, kind)(float(value[0]), float(value[1]))
    return domains
