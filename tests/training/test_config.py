"""Config validation, dict round trip and ablations."""

import dataclasses
import json
import math

import pytest

from gsmflow_nflows.training import (
    ABLATIONS,
    EvaluationConfig,
    FlowTrainingConfig,
    GSMFlowConfig,
    MiningConfig,
    ModelConfig,
)

INVALID = [
    (FlowTrainingConfig, {"lr": 0.0}, "training.lr"),
    (FlowTrainingConfig, {"lr": -1e-3}, "training.lr"),
    (FlowTrainingConfig, {"lr": math.nan}, "training.lr"),
    (FlowTrainingConfig, {"lr": "1e-3"}, "training.lr"),
    (FlowTrainingConfig, {"lr_gamma": 0.0}, "training.lr_gamma"),
    (FlowTrainingConfig, {"weight_decay": -1e-5}, "training.weight_decay"),
    (FlowTrainingConfig, {"epochs": 0}, "training.epochs"),
    (FlowTrainingConfig, {"batch_size": 2.0}, "training.batch_size"),
    (FlowTrainingConfig, {"batch_size": True}, "training.batch_size"),
    (FlowTrainingConfig, {"lr_step_epochs": 0}, "training.lr_step_epochs"),
    (FlowTrainingConfig, {"max_iterations": 0}, "training.max_iterations"),
    (FlowTrainingConfig, {"prototype_weight": -1.0}, "training.prototype_weight"),
    (FlowTrainingConfig, {"perturbation_pi": -0.1}, "training.perturbation_pi"),
    (FlowTrainingConfig, {"perturbation_dropout": 1.0}, "training.perturbation_dropout"),
    (FlowTrainingConfig, {"perturbation_dropout": 1.5}, "training.perturbation_dropout"),
    (FlowTrainingConfig, {"perturbation_dropout": -0.1}, "training.perturbation_dropout"),
    (ModelConfig, {"num_blocks": 0}, "model.num_blocks"),
    (ModelConfig, {"num_blocks": -2}, "model.num_blocks"),
    (ModelConfig, {"hidden_features": 0}, "model.hidden_features"),
    (ModelConfig, {"semantic_features": 0}, "model.semantic_features"),
    (ModelConfig, {"clamp": 0.0}, "model.clamp"),
    (ModelConfig, {"permutation": "shuffle"}, "model.permutation"),
    (MiningConfig, {"relation_epochs": 0}, "mining.relation_epochs"),
    (MiningConfig, {"relation_batch_size": 0}, "mining.relation_batch_size"),
    (MiningConfig, {"relation_lr": 0.0}, "mining.relation_lr"),
    (MiningConfig, {"lr": -30.0}, "mining.lr"),
    (MiningConfig, {"loops": -1}, "mining.loops"),
    (MiningConfig, {"momentum": -0.9}, "mining.momentum"),
    (MiningConfig, {"entropy_weight": math.inf}, "mining.entropy_weight"),
    (EvaluationConfig, {"samples_per_class": 0}, "evaluation.samples_per_class"),
    (EvaluationConfig, {"classifier_lr": 0.0}, "evaluation.classifier_lr"),
    (EvaluationConfig, {"classifier_batch_size": 0}, "evaluation.classifier_batch_size"),
    (EvaluationConfig, {"classifier_epochs": 0}, "evaluation.classifier_epochs"),
    (EvaluationConfig, {"eval_every": 0}, "evaluation.eval_every"),
    (EvaluationConfig, {"eval_start": -1}, "evaluation.eval_start"),
]


@pytest.mark.parametrize("kind, values, name", INVALID, ids=[f"{n}={v}" for _, v, n in INVALID])
def test_invalid_hyperparameter_is_a_value_error_naming_it(kind, values, name):
    with pytest.raises(ValueError, match=name.replace(".", r"\.")):
        kind(**values)


@pytest.mark.parametrize("seed", [1.5, "3", None, True])
def test_seed_must_be_an_integer(seed):
    with pytest.raises(ValueError, match="seed must be an integer"):
        GSMFlowConfig(seed=seed)
    with pytest.raises(ValueError, match="seed must be an integer"):
        GSMFlowConfig().with_seed(seed)


@pytest.mark.parametrize("permutation", [None, "reverse", "random", "lu"])
def test_known_permutations_are_accepted(permutation):
    assert ModelConfig(permutation=permutation).permutation == permutation


def test_unknown_ablation_is_a_value_error_listing_the_choices():
    with pytest.raises(ValueError, match=r"Unknown ablation \['foo'\].*mining"):
        GSMFlowConfig().ablate(["prototype", "foo"])


def _custom():
    return GSMFlowConfig(
        model=ModelConfig(num_blocks=2, hidden_features=32, semantic_features=8,
                          permutation="lu"),
        training=FlowTrainingConfig(epochs=3, lr=2e-3, max_iterations=17,
                                    perturbation_dropout=0.25),
        mining=MiningConfig(enabled=False, loops=0, momentum=0.5),
        evaluation=EvaluationConfig(samples_per_class=7, eval_start=0),
        seed=42,
    )  # fmt: skip


def test_dict_round_trip_through_json():
    config = _custom()
    values = json.loads(json.dumps(config.to_dict()))
    assert values["model"]["permutation"] == "lu" and values["seed"] == 42
    assert values["training"]["max_iterations"] == 17
    assert GSMFlowConfig.from_dict(values) == config
    assert GSMFlowConfig.from_dict({}) == GSMFlowConfig()  # missing sections: defaults


@pytest.mark.parametrize(
    "values",
    [{"extra": 1}, {"model": {"blocks": 3}}, {"training": {"lr": -1.0}}],
    ids=["unknown-section", "unknown-field", "invalid-value"],
)
def test_from_dict_refuses_what_is_not_a_config(values):
    with pytest.raises(ValueError):
        GSMFlowConfig.from_dict(values)


SWITCHED = {
    "mining": ("mining", "enabled", False),
    "positioning": ("model", "relative_positioning", False),
    "prototype": ("training", "prototype_weight", 0.0),
    "perturbation": ("training", "perturbation_pi", 0.0),
}


def _flat(config):
    return {
        (section, name): value
        for section, fields in config.to_dict().items()
        if isinstance(fields, dict)
        for name, value in fields.items()
    } | {("seed", ""): config.seed}


def test_ablations_are_the_documented_four():
    assert set(ABLATIONS) == set(SWITCHED)


@pytest.mark.parametrize(
    "names", [[], ["mining"], ["positioning"], ["prototype"], ["perturbation"],
              ["prototype", "mining"], list(SWITCHED)],
)  # fmt: skip
def test_ablate_switches_exactly_the_named_parts(names):
    config = _custom()
    config = dataclasses.replace(config, mining=dataclasses.replace(config.mining, enabled=True))
    before, after = _flat(config), _flat(config.ablate(names))
    expected = dict(before)
    for name in names:
        section, field, value = SWITCHED[name]
        assert before[(section, field)] != value  # the switch really changes something
        expected[(section, field)] = value
    assert after == expected
    assert _flat(config) == before  # the original is untouched (frozen)


def test_with_seed_changes_only_the_seed():
    config = _custom()
    assert config.with_seed(7) == dataclasses.replace(config, seed=7)
