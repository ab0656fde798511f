"""Configuration of a GSMFlow run: one frozen dataclass per stage, validated on creation.

Names follow the paper's code where a reader will look for them (``gen_nepoch``
is ``FlowTrainingConfig.epochs``, ``nSample`` is
``EvaluationConfig.samples_per_class``, ``aug_lr`` is ``MiningConfig.lr``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gsmflow_nflows._checks import check_config_number as _number
from gsmflow_nflows._checks import check_config_positive_int as _positive_int
from gsmflow_nflows.errors import ConfigError
from gsmflow_nflows.model import CONDITIONINGS, PERMUTATIONS

ABLATIONS = ("mining", "positioning", "prototype", "perturbation")


@dataclass(frozen=True)
class ModelConfig:
    """The flow's shape: coupling blocks, their widths and clamp, the conditioning.

    ``conditioning="couplings"`` is the paper's model; ``"mean"`` (not in the
    paper) feeds the class vector only through a ridge regression of the seen
    class means with penalty ``mean_ridge_alpha`` (see
    :mod:`gsmflow_nflows.semantic_mean`); with it, ``scale_residual`` divides
    the residual by the pooled within-class standard deviation
    (:func:`~gsmflow_nflows.semantic_mean.residual_scale`), so the flow starts
    from the linear-Gaussian model. ``shrink_residual`` (with it; off by
    default: it did not win on the validation splits) blends unseen samples'
    residual with Gaussian noise by the leave-classes-out ``lambda`` of
    :func:`~gsmflow_nflows.semantic_mean.residual_shrinkage`.
    """

    num_blocks: int = 5
    hidden_features: int = 2048
    semantic_features: int = 1024
    clamp: float = 1.0
    permutation: str | None = None
    relative_positioning: bool = True
    conditioning: str = "couplings"
    mean_ridge_alpha: float = 1.0
    scale_residual: bool = True
    shrink_residual: bool = False

    def __post_init__(self) -> None:
        for name in ("num_blocks", "hidden_features", "semantic_features"):
            _positive_int("model", name, getattr(self, name))
        _number("model", "clamp", self.clamp, positive=True)
        if self.conditioning not in CONDITIONINGS:
            raise ConfigError(
                f"model.conditioning must be one of {CONDITIONINGS}, got {self.conditioning!r}."
            )
        _number("model", "mean_ridge_alpha", self.mean_ridge_alpha, positive=True)
        for name in ("relative_positioning", "scale_residual", "shrink_residual"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(
                    f"model.{name} must be true or false, got {getattr(self, name)!r}."
                )
        if self.permutation not in PERMUTATIONS:
            raise ConfigError(
                f"model.permutation must be one of {PERMUTATIONS}, got {self.permutation!r}."
            )


@dataclass(frozen=True)
class FlowTrainingConfig:
    """The flow's schedule: epochs, batch size, Adam, learning-rate steps, loss weights.

    ``iterations = floor(N_train / batch_size) * epochs`` with ``N_train`` the
    real training set before mining; the learning rate is multiplied by
    ``lr_gamma`` every ``lr_step_epochs`` epochs of ``ceil(N_train / batch_size)``
    iterations. ``max_iterations`` caps the count (quick presets).
    ``freeze_tolerance``: once Adam's state bounds how far any weight can still
    move over the rest of the schedule below this fraction of the weights' RMS
    (:mod:`gsmflow_nflows.training.frozen`), the trainer takes no more steps
    (iterations and evaluations still count); 0 switches it off.
    """

    epochs: int = 600
    batch_size: int = 200
    lr: float = 3e-4
    weight_decay: float = 1e-5
    lr_step_epochs: int = 20
    lr_gamma: float = 0.55
    prototype_weight: float = 3.0
    perturbation_pi: float = 0.02
    perturbation_dropout: float = 0.0
    max_iterations: int | None = None
    freeze_tolerance: float = 1e-3

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "lr_step_epochs"):
            _positive_int("training", name, getattr(self, name))
        if self.max_iterations is not None:
            _positive_int("training", "max_iterations", self.max_iterations)
        _number("training", "lr", self.lr, positive=True)
        _number("training", "lr_gamma", self.lr_gamma, positive=True)
        for name in ("weight_decay", "prototype_weight", "perturbation_pi", "freeze_tolerance"):
            _number("training", name, getattr(self, name))
        _number("training", "perturbation_dropout", self.perturbation_dropout)
        if self.perturbation_dropout >= 1:
            raise ConfigError(
                f"training.perturbation_dropout must be < 1, got {self.perturbation_dropout}."
            )

    def iterations(self, num_train: int) -> int:
        """Total iterations for a training set of ``num_train`` real samples."""
        total = (num_train // self.batch_size) * self.epochs
        return min(total, self.max_iterations) if self.max_iterations else total

    def iterations_per_epoch(self, num_train: int) -> int:
        """Iterations between two learning-rate steps."""
        return math.ceil(num_train / self.batch_size)


@dataclass(frozen=True)
class MiningConfig:
    """Boundary sample mining with entropy maximisation (the paper's relation network stage).

    ``momentum`` (the reference's ``aug_mt``) is not in the published table; 0.9
    is our choice, stated in the README.
    """

    enabled: bool = True
    relation_epochs: int = 50
    relation_batch_size: int = 200
    relation_lr: float = 1e-3
    relation_weight_decay: float = 3e-6
    relation_hidden: int = 2048
    lr: float = 30.0
    loops: int = 20
    momentum: float = 0.9
    entropy_weight: float = 10.0

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ConfigError(f"mining.enabled must be true or false, got {self.enabled!r}.")
        for name in ("relation_epochs", "relation_batch_size", "relation_hidden"):
            _positive_int("mining", name, getattr(self, name))
        for name in ("relation_lr", "lr"):
            _number("mining", name, getattr(self, name), positive=True)
        for name in ("relation_weight_decay", "momentum", "entropy_weight"):
            _number("mining", name, getattr(self, name))
        if not isinstance(self.loops, int) or self.loops < 0:
            raise ConfigError(f"mining.loops must be an integer >= 0, got {self.loops!r}.")


@dataclass(frozen=True)
class EvaluationConfig:
    """Feature generation and the softmax classifier of the GZSL evaluation.

    The classifier trains ``classifier_epochs`` epochs, raised so that it takes at
    least ``classifier_min_steps`` Adam steps: a fixed epoch count gave a few
    hundred-sample dataset 20 steps, and a classifier that never trained. 1,000
    steps is about ``1 / lr`` at the published ``lr = 1e-3`` (Adam moves a weight
    by at most about ``lr`` a step); the published runs at their real sizes take
    1,900 or more, so the floor leaves them unchanged.

    ``samples_per_class`` is the weight of each unseen class in the GZSL
    classifier, counted in features (the paper's ``nSample``). With
    ``oversample = k > 1`` (not in the paper), ``k * samples_per_class``
    features are drawn per unseen class and each weighs ``1 / k`` in the
    classifier's loss: the same seen/unseen balance, with the Monte-Carlo noise
    of the generated set (which moved H by several points from one draw to the
    next on small data) ``sqrt(k)`` times smaller.
    """

    samples_per_class: int = 9000
    oversample: int = 1
    classifier_lr: float = 1e-3
    classifier_batch_size: int = 1200
    classifier_epochs: int = 20
    classifier_min_steps: int = 1000
    classifier_weight_decay: float = 0.0
    #: ``"constant"`` (the reference) or ``"cosine"`` (decayed to 0: a converged classifier).
    classifier_lr_schedule: str = "constant"
    eval_every: int = 300
    eval_start: int = 5000

    def __post_init__(self) -> None:
        for name in (
            "samples_per_class",
            "oversample",
            "classifier_batch_size",
            "classifier_epochs",
        ):
            _positive_int("evaluation", name, getattr(self, name))
        _positive_int("evaluation", "eval_every", self.eval_every)
        _number("evaluation", "classifier_lr", self.classifier_lr, positive=True)
        _number("evaluation", "classifier_weight_decay", self.classifier_weight_decay)
        if self.classifier_lr_schedule not in ("constant", "cosine"):
            raise ConfigError(
                "evaluation.classifier_lr_schedule must be 'constant' or 'cosine', "
                f"got {self.classifier_lr_schedule!r}."
            )
        if not isinstance(self.classifier_min_steps, int) or self.classifier_min_steps < 0:
            raise ConfigError(
                "evaluation.classifier_min_steps must be an integer >= 0, "
                f"got {self.classifier_min_steps!r}."
            )
        if not isinstance(self.eval_start, int) or self.eval_start < 0:
            raise ConfigError(
                f"evaluation.eval_start must be an integer >= 0, got {self.eval_start!r}."
            )

    def generated_per_class(self) -> int:
        """Features drawn for each unseen class: ``samples_per_class * oversample``.

        Example:
            >>> EvaluationConfig(samples_per_class=300, oversample=4).generated_per_class()
            1200
        """
        return self.samples_per_class * self.oversample

    def generated_weight(self) -> float:
        """Each generated feature's weight in the GZSL classifier's loss: ``1 / oversample``.

        Example:
            >>> EvaluationConfig(oversample=4).generated_weight()
            0.25
        """
        return 1.0 / self.oversample

    def classifier_settings(self) -> dict[str, Any]:
        """The keyword arguments of ``evaluate_gzsl``/``evaluate_zsl`` for the classifier."""
        return {
            "lr": self.classifier_lr,
            "batch_size": self.classifier_batch_size,
            "epochs": self.classifier_epochs,
            "min_steps": self.classifier_min_steps,
            "weight_decay": self.classifier_weight_decay,
            "lr_schedule": self.classifier_lr_schedule,
        }


@dataclass(frozen=True)
class GSMFlowConfig:
    """Everything a run needs: one section per stage, plus the seed.

    Example:
        >>> config = GSMFlowConfig(training=FlowTrainingConfig(epochs=2))
        >>> config.training.epochs, config.model.num_blocks
        (2, 5)
        >>> config.ablate(["prototype"]).training.prototype_weight
        0.0
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    training: FlowTrainingConfig = field(default_factory=FlowTrainingConfig)
    mining: MiningConfig = field(default_factory=MiningConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ConfigError(f"seed must be an integer, got {self.seed!r}.")

    def ablate(self, components: list[str] | tuple[str, ...]) -> GSMFlowConfig:
        """A copy with the named components switched off (see ``ABLATIONS``)."""
        unknown = sorted(set(components) - set(ABLATIONS))
        if unknown:
            raise ConfigError(f"Unknown ablation {unknown}; choose from {', '.join(ABLATIONS)}.")
        config = self
        if "mining" in components:
            config = dataclasses.replace(
                config, mining=dataclasses.replace(config.mining, enabled=False)
            )
        if "positioning" in components:
            config = dataclasses.replace(
                config, model=dataclasses.replace(config.model, relative_positioning=False)
            )
        if "prototype" in components:
            training = dataclasses.replace(config.training, prototype_weight=0.0)
            config = dataclasses.replace(config, training=training)
        if "perturbation" in components:
            training = dataclasses.replace(config.training, perturbation_pi=0.0)
            config = dataclasses.replace(config, training=training)
        return config

    def with_seed(self, seed: int) -> GSMFlowConfig:
        """A copy with another seed."""
        return dataclasses.replace(self, seed=seed)

    def with_overrides(self, overrides: Mapping[str, Any]) -> GSMFlowConfig:
        """A copy with fields set by ``"section.field"`` keys, each checked by its section.

        The sections are ``model``, ``training``, ``mining`` and ``evaluation``; a key
        that names no field is a :class:`ConfigError` naming it, and so is a value its
        section refuses.

        Example:
            >>> GSMFlowConfig().with_overrides({"training.lr": 1e-3}).training.lr
            0.001
            >>> GSMFlowConfig().with_overrides({"training.lrr": 1e-3})  # doctest: +ELLIPSIS
            Traceback (most recent call last):
            ...
            gsmflow_nflows.errors.ConfigError: Unknown setting 'training.lrr': ...
        """
        if not isinstance(overrides, Mapping):
            raise ConfigError(
                "Overrides must be a dict of 'section.field' -> value, "
                f"got {type(overrides).__name__}."
            )
        sections = ("model", "training", "mining", "evaluation")
        changes: dict[str, dict[str, Any]] = {}
        for key, value in overrides.items():
            section, dot, name = key.partition(".") if isinstance(key, str) else ("", "", "")
            if not dot or section not in sections:
                raise ConfigError(
                    f"Unknown setting {key!r}: name it 'section.field' (e.g. 'training.lr') "
                    f"with section one of {', '.join(sections)}."
                )
            names = [item.name for item in dataclasses.fields(getattr(self, section))]
            if name not in names:
                raise ConfigError(
                    f"Unknown setting {key!r}: {section} has no field {name!r}; "
                    f"choose from {', '.join(names)}."
                )
            changes.setdefault(section, {})[name] = value
        replaced = {
            section: dataclasses.replace(getattr(self, section), **values)
            for section, values in changes.items()
        }
        return dataclasses.replace(self, **replaced)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (round-trips through :meth:`from_dict`)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> GSMFlowConfig:
        """Rebuild a config from :meth:`to_dict`'s output; unknown keys are an error."""
        sections = {
            "model": ModelConfig,
            "training": FlowTrainingConfig,
            "mining": MiningConfig,
            "evaluation": EvaluationConfig,
        }
        try:
            kwargs: dict[str, Any] = {
                name: kind(**values[name]) for name, kind in sections.items() if name in values
            }
            if "seed" in values:
                kwargs["seed"] = values["seed"]
            extra = set(values) - set(sections) - {"seed"}
            if extra:
                raise TypeError(f"unexpected keys {sorted(extra)}")
            return cls(**kwargs)
        except TypeError as error:
            raise ConfigError(f"Not a GSMFlow config: {error}.") from None
