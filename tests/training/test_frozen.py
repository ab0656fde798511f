"""Stopping once the schedule cannot move the weights: the bound; runs with and without."""

import numpy as np
import pytest
import torch

from gsmflow_nflows.errors import ConfigError
from gsmflow_nflows.training import GSMFlowTrainer
from gsmflow_nflows.training.frozen import (
    adam_ratio_bound,
    predicted_freeze,
    remaining_movement,
    weights_rms,
)
from tests.tiny_gzsl import tiny_config


def adam_moves(gradients, lr=1.0, betas=(0.9, 0.999), weight_decay=0.0):
    """|the move of each of torch's Adam steps| on one weight fed ``gradients`` (eps = 0)."""
    w = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    optimizer = torch.optim.Adam([w], lr=lr, betas=betas, eps=0.0, weight_decay=weight_decay)
    moves = []
    for g in gradients:
        before = w.detach().clone()
        w.grad = torch.tensor([g], dtype=torch.float64)
        optimizer.step()
        moves.append(float((w.detach() - before).abs()) / lr)
    return np.array(moves)


@pytest.mark.parametrize("betas", [(0.9, 0.999), (0.5, 0.999), (0.8, 0.99)])
def test_no_gradient_sequence_beats_the_bound_and_the_worst_one_reaches_it(betas):
    beta1, beta2 = betas
    steps = np.arange(1, 301)
    bound = adam_ratio_bound(beta1, beta2, steps)
    rng = np.random.default_rng(0)
    for kind in ("normal", "heavy", "sign-flips"):
        if kind == "normal":
            grads = rng.normal(size=300)
        elif kind == "heavy":
            grads = rng.standard_cauchy(size=300)
        else:
            grads = np.where(rng.random(300) < 0.9, 1.0, -50.0)
        assert np.all(adam_moves(grads, betas=betas) <= bound * (1 + 1e-9)), kind
    # Cauchy-Schwarz is tight for g at lag j proportional to (beta1 / beta2)^j: the last
    # step of such a sequence moves by exactly the bound.
    t = 200
    worst = (beta1 / beta2) ** np.arange(t)[::-1]
    assert adam_moves(worst, betas=betas)[-1] == pytest.approx(bound[t - 1], rel=1e-9)


def test_no_bound_when_the_first_moment_outlasts_the_second():
    assert adam_ratio_bound(0.99, 0.9, np.array([10])) is None


def test_remaining_movement_bounds_the_real_moves():
    """Training continued past the check moves no weight further than the bound said."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.3)
    x, y = torch.randn(64, 4), torch.randn(64, 1)
    per_epoch, end = 4, 40
    for iteration in range(1, end + 1):
        if iteration == 13:
            bound = remaining_movement(
                optimizer, scheduler, iteration=12, end=end, iterations_per_epoch=per_epoch
            )
            start = [p.detach().clone() for p in model.parameters()]
        loss = (model(x[iteration % 8 :: 8]) - y[iteration % 8 :: 8]).pow(2).mean() * 100
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if iteration % per_epoch == 0:
            scheduler.step()
    pairs = zip(model.parameters(), start, strict=True)
    moved = max(float((p.detach() - s).abs().max()) for p, s in pairs)
    assert 0 < moved <= bound
    assert bound < 50 * moved  # and not uselessly loose on a real run


def frozen_config(tolerance, seed=0):
    # lr 1e-2 multiplied by 1e-3 every epoch (4 iterations): after two epochs the 12
    # iterations left can move no weight by 1e-3 of the weights' RMS.
    return tiny_config(
        seed=seed,
        training={"lr": 1e-2, "lr_step_epochs": 1, "lr_gamma": 1e-3,
                  "freeze_tolerance": tolerance},
    )  # fmt: skip


def fit(config, data, **options):
    trainer = GSMFlowTrainer(config, data, device="cpu", **options.pop("trainer", {}))
    history = []

    def evaluate(iteration, flow):
        return {"iteration": iteration}

    flow = trainer.fit(evaluate=evaluate, evaluate_at=lambda i: i % 5 == 0, **options)
    history = [r["iteration"] for r in trainer.history]
    return trainer, {k: v.detach().clone() for k, v in flow.state_dict().items()}, history


def test_a_frozen_run_ends_within_its_tolerance_of_the_full_run(tiny_data):
    full_trainer, full, full_history = fit(frozen_config(0.0), tiny_data)
    short_trainer, short, short_history = fit(frozen_config(1e-3), tiny_data)
    assert full_trainer.frozen_at is None
    assert short_trainer.frozen_at == 8  # checked at each epoch's end: 4, 8, ...
    assert short_history == full_history == [5, 10, 15, 20]  # the evaluations stay
    weights = [v for k, v in full.items() if v.dtype.is_floating_point]
    rms = weights_rms(weights)
    worst = max(float((full[k] - short[k]).abs().max()) for k in full)
    assert 0 < worst <= 1e-3 * rms


def test_the_schedule_alone_predicts_where_a_run_freezes(tiny_data):
    trainer, state, _ = fit(frozen_config(1e-3), tiny_data)
    rms = weights_rms([v for v in state.values() if v.dtype.is_floating_point])
    training = frozen_config(1e-3).training
    assert predicted_freeze(training, tiny_data.num_train, rms) == trainer.frozen_at == 8
    assert predicted_freeze(frozen_config(0.0).training, tiny_data.num_train, rms) is None
    assert predicted_freeze(training, tiny_data.num_train, rms=1e-12) is None  # never small enough


def test_resuming_after_the_freeze_gives_the_same_run(tiny_data, tmp_path):
    config = frozen_config(1e-3, seed=3)
    options = {"trainer": {"checkpoint_path": tmp_path / "run.pt", "checkpoint_every": 3}}
    fit(config, tiny_data, stop_after=14, **options)
    resumed_trainer, resumed, history = fit(config, tiny_data, resume=True, **options)
    trainer, uninterrupted, full_history = fit(config, tiny_data)
    assert resumed_trainer.frozen_at == trainer.frozen_at == 8
    assert history == full_history
    for name in uninterrupted:
        assert torch.equal(resumed[name], uninterrupted[name]), name


def test_a_negative_tolerance_is_refused():
    with pytest.raises(ConfigError, match="freeze_tolerance"):
        frozen_config(-1.0)
