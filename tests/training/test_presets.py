"""Presets: the published hyperparameters, generic defaults from the data, quick and smoke."""

import dataclasses
import math

import pytest
import torch

from gsmflow_nflows.data import GZSLData
from gsmflow_nflows.training import PAPER_PRESETS, generic_config, preset_config

# The hyperparameters published with the paper (Chen et al., IEEE TMM 2022), typed in by
# hand, independently of the package.
# blocks, gen_nepoch, lr, wd, batch, step, gamma, proto, pi, rel_epochs, rel_batch, rel_lr,
# rel_wd, aug_lr, loops, entropy, cls_lr, cls_batch, cls_epochs, nSample, every, start, seed
PUBLISHED_TABLE = {
    "apy": (5, 600, 3e-4, 1e-5, 200, 20, 0.55, 3, 0.02, 50, 200, 1e-3, 3e-6,
            30, 20, 10, 1e-3, 1200, 20, 9000, 300, 5000, 6152),
    "awa2": (3, 1000, 3e-4, 3e-6, 256, 17, 0.92, 10, 0.15, 50, 256, 3e-4, 3e-6,
             100, 30, 20, 5e-3, 1200, 30, 50000, 500, 60000, 7848),
    "cub": (3, 1500, 1e-4, 3e-5, 256, 25, 0.8, 1, 0.05, 100, 256, 1e-4, 1e-6,
            20, 20, 10, 3e-3, 600, 50, 600, 300, 10000, 6167),
    "flo": (3, 1000, 1e-4, 1e-4, 256, 30, 0.8, 3, 0.1, 60, 64, 3e-4, 1e-6,
            20, 20, 1, 5e-3, 1000, 30, 3000, 300, 2000, 6289),
}  # fmt: skip


def _row(config):
    m, t, r, e = config.model, config.training, config.mining, config.evaluation
    return (m.num_blocks, t.epochs, t.lr, t.weight_decay, t.batch_size, t.lr_step_epochs,
            t.lr_gamma, t.prototype_weight, t.perturbation_pi, r.relation_epochs,
            r.relation_batch_size, r.relation_lr, r.relation_weight_decay, r.lr, r.loops,
            r.entropy_weight, e.classifier_lr, e.classifier_batch_size, e.classifier_epochs,
            e.samples_per_class, e.eval_every, e.eval_start, config.seed)  # fmt: skip


def _data(num_train=1000, num_seen=5, num_unseen=3, dim=4, attributes=3):
    """A GZSLData of the given size (features need not mean anything here)."""
    labels = torch.arange(num_train) % num_seen
    return GZSLData(
        name="custom",
        train_features=torch.rand(num_train, dim),
        train_labels=labels,
        test_seen_features=torch.rand(num_seen, dim),
        test_seen_labels=torch.arange(num_seen),
        test_unseen_features=torch.rand(num_unseen, dim),
        test_unseen_labels=torch.arange(num_unseen),
        seen_classes=torch.arange(num_seen),
        unseen_classes=torch.arange(num_seen, num_seen + num_unseen),
        seen_embeddings=torch.rand(num_seen, attributes),
        unseen_embeddings=torch.rand(num_unseen, attributes),
        class_names=tuple(f"c{i}" for i in range(num_seen + num_unseen)),
    )


@pytest.mark.parametrize("name", sorted(PUBLISHED_TABLE))
def test_paper_presets_are_the_published_table(name):
    assert _row(PAPER_PRESETS[name]) == PUBLISHED_TABLE[name]
    model = PAPER_PRESETS[name].model
    assert (model.hidden_features, model.semantic_features, model.clamp) == (2048, 1024, 1.0)
    assert model.permutation is None and model.relative_positioning
    assert PAPER_PRESETS[name].training.max_iterations is None
    assert PAPER_PRESETS[name].mining.enabled


@pytest.mark.parametrize("name", ["APY", "apy", "Cub", "flo", "awa2"])
def test_preset_config_paper_is_case_insensitive_and_ignores_the_data(name):
    assert preset_config(name, _data(), "paper") == PAPER_PRESETS[name.lower()]


def test_awa1_uses_awa2_settings():
    assert preset_config("awa1", _data(), "paper") == PAPER_PRESETS["awa2"]


@pytest.mark.parametrize("name, num_train", [("apy", 5932), ("awa2", 23527), ("cub", 7057),
                                             ("flo", 5631)])  # fmt: skip
def test_paper_iterations_are_floor_n_over_batch_times_epochs(name, num_train):
    training = PAPER_PRESETS[name].training
    epochs, batch = PUBLISHED_TABLE[name][1], PUBLISHED_TABLE[name][4]
    assert training.iterations(num_train) == math.floor(num_train / batch) * epochs
    assert training.iterations_per_epoch(num_train) == math.ceil(num_train / batch)


def test_apy_iterations_by_hand():
    # 5932 trainval images, batch 200: 29 full batches per epoch, 600 epochs.
    assert PAPER_PRESETS["apy"].training.iterations(5932) == 29 * 600 == 17400


@pytest.mark.parametrize(
    "num_train, num_seen, expected_samples",
    [(40, 4, 50), (1000, 5, 400), (1000, 100, 50), (30000, 3, 5000), (9000, 6, 3000)],
)
def test_generic_config_derives_from_the_data(num_train, num_seen, expected_samples):
    config = generic_config(_data(num_train, num_seen, dim=7))
    # twice the mean real count per seen class, between 50 and 5000
    assert config.evaluation.samples_per_class == expected_samples
    batch = min(128, max(32, num_train // 8), num_train)
    assert config.training.batch_size == batch
    assert config.evaluation.classifier_batch_size == min(1200, num_train)
    assert config.model.hidden_features == 64 and config.model.conditioning == "mean"
    # 20 epochs of floor(N / batch) iterations, between 1,000 and 3,000
    iterations = config.training.iterations(num_train)
    assert iterations == min(3000, max(1000, 20 * (num_train // batch)))
    assert config.evaluation.eval_start <= iterations
    # the learning rate is halved at each third of the run, never decays to nothing
    per_epoch = config.training.iterations_per_epoch(num_train)
    steps = iterations // (per_epoch * config.training.lr_step_epochs)
    assert config.training.lr_gamma == 0.5 and steps <= 3
    assert config.mining.relation_batch_size <= num_train


def test_generic_config_widths_follow_the_feature_dim():
    model = generic_config(_data(dim=100)).model
    assert (model.hidden_features, model.semantic_features) == (200, 50)
    model = generic_config(_data(num_train=8, dim=3000)).model
    assert (model.hidden_features, model.semantic_features) == (512, 1024)


def test_quick_is_a_smaller_model_on_a_shorter_run_with_the_same_rules():
    data = _data(num_train=5932, num_seen=20, dim=2048)
    default, quick = preset_config("apy", data), preset_config("apy", data, "quick")
    assert default == generic_config(data)  # default is data-derived for known datasets too
    assert (default.model.hidden_features, quick.model.hidden_features) == (512, 256)
    assert not default.mining.enabled
    # batch 128: 46 batches an epoch, 20 epochs = 920 iterations; default's floor is 1,000
    assert default.training.iterations(5932) == 1000
    assert quick.training.iterations(5932) == 920
    assert quick.training.lr == default.training.lr
    assert quick.evaluation == dataclasses.replace(
        default.evaluation, eval_every=92, eval_start=460
    )


def test_paper_preset_of_an_unknown_dataset_keeps_the_paper_model():
    data = _data(num_train=300)
    paper = preset_config("my-own", data, "paper")
    assert paper.model.conditioning == "couplings" and paper.mining.enabled
    assert paper.training == generic_config(data).training
    assert preset_config("my-own", data) == generic_config(data)


def test_smoke_variant_is_tiny_and_fits_the_data():
    data = _data(num_train=40)
    smoke = preset_config("apy", data, "smoke")
    assert smoke.training.iterations(40) == 40
    assert smoke.training.batch_size <= 40 and smoke.mining.relation_batch_size <= 40
    assert smoke.model.hidden_features <= 64


def test_unknown_preset_kind_is_a_value_error():
    with pytest.raises(ValueError, match="Unknown preset 'huge'"):
        preset_config("apy", _data(), "huge")


@pytest.mark.parametrize(
    "num_train, num_seen, num_unseen, dim, expected",
    [
        (1000, 5, 3, 64, 8),  # 400 per class: ceil(50 * 64 / 400) = 8
        (1007, 7, 3, 64, 12),  # the digits: 288 per class, ceil(3200 / 288) = 12
        (5932, 20, 12, 2048, 9),  # aPY-sized: 593 per class; 512 MiB hold 65,536 rows
        (30000, 3, 3, 7, 1),  # 5,000 per class already exceed 50 * 7 draws
    ],
)
def test_generic_config_oversamples_to_50_draws_per_dimension(
    num_train, num_seen, num_unseen, dim, expected
):
    config = generic_config(_data(num_train, num_seen, num_unseen, dim=dim))
    evaluation = config.evaluation
    assert evaluation.oversample == expected
    assert evaluation.generated_per_class() == evaluation.samples_per_class * expected
    rows = evaluation.generated_per_class() * num_unseen
    assert rows * dim * 4 <= 512 * 2**20
    # the unseen classes keep their weight: the classifier's L2 still counts real + samples
    weight = num_train + evaluation.samples_per_class * num_unseen
    assert evaluation.classifier_weight_decay == pytest.approx(1 / weight)


def test_paper_and_smoke_do_not_oversample():
    assert all(config.evaluation.oversample == 1 for config in PAPER_PRESETS.values())
    assert preset_config("apy", _data(num_train=40), "smoke").evaluation.oversample == 1
