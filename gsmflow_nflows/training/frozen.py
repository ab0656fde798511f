"""When the rest of a schedule can no longer change the flow: a bound from Adam's own state.

Adam moves a weight by ``lr * m_hat / (sqrt(v_hat) + eps)`` per step. Whatever
the gradients, Cauchy-Schwarz bounds that ratio: with ``m_t = (1 - b1) sum_j
b1^j g_(t-j)`` and ``v_t = (1 - b2) sum_j b2^j g_(t-j)^2``,

    |m_hat / sqrt(v_hat)| <= (1 - b1) / sqrt(1 - b2) * sqrt(sum_(j<t) (b1^2 / b2)^j)
                             * sqrt(1 - b2^t) / (1 - b1^t)

(finite when ``b1^2 < b2``; 7.3 for the usual 0.9 / 0.999 late in a run; an
L2 weight decay is part of the gradient and bounded with it). The learning
rates still to come follow from the optimizer's current rate and the
step-decay scheduler's state. Summed over the remaining steps, that bounds how
far any weight can still move; float32 rounding of each update at most doubles
it. :func:`remaining_movement` computes the bound; the trainer stops taking
steps once it falls below ``training.freeze_tolerance`` times the root mean
square of the flow's weights (the schedule's evaluations and iteration count
stay as they were).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from gsmflow_nflows.training.config import FlowTrainingConfig

__all__ = ["adam_ratio_bound", "predicted_freeze", "remaining_movement", "weights_rms"]


def adam_ratio_bound(beta1: float, beta2: float, steps: np.ndarray) -> np.ndarray | None:
    """The bound on ``|m_hat / (sqrt(v_hat) + eps)|`` at each Adam step count in ``steps``.

    Args:
        beta1: Adam's first-moment decay.
        beta2: Adam's second-moment decay.
        steps: step counts ``t >= 1``.

    Returns:
        The bounds, or ``None`` when ``beta1 ** 2 >= beta2`` (no finite bound).

    Example:
        >>> round(float(adam_ratio_bound(0.9, 0.999, np.array([100_000]))[0]), 2)
        7.27
        >>> adam_ratio_bound(0.9, 0.999, np.array([1]))  # the first step moves by lr
        array([1.])
    """
    ratio = beta1**2 / beta2
    if ratio >= 1:
        return None
    t = np.asarray(steps, dtype=np.float64)
    return (
        (1 - beta1)
        / math.sqrt(1 - beta2)
        * np.sqrt((1 - ratio**t) / (1 - ratio))
        * np.sqrt(1 - beta2**t)
        / (1 - beta1**t)
    )


def remaining_movement(
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    *,
    iteration: int,
    end: int,
    iterations_per_epoch: int,
) -> float:
    """An upper bound on how far any weight can move in the steps ``iteration + 1 .. end``.

    ``scheduler`` steps once every ``iterations_per_epoch`` iterations, as the
    trainer steps it. The rates to come are the optimizer's current one times
    ``gamma`` for each scheduler step-size boundary crossed; each step's move is
    at most ``lr * adam_ratio_bound``; float32 rounding at most doubles a move
    that changes a weight (a smaller one rounds back to the weight).

    Args:
        optimizer: an Adam optimizer (``lr``, ``betas`` and the step count are read from
            each parameter group; the largest bound is returned).
        scheduler: its ``StepLR`` (any other schedule: no bound, ``inf``).
        iteration: steps taken so far.
        end: the schedule's last iteration.
        iterations_per_epoch: iterations between two scheduler steps.

    Returns:
        The bound (``inf`` when Adam's betas admit none); 0 when nothing remains.

    Example:
        >>> w = torch.nn.Parameter(torch.zeros(3))
        >>> opt = torch.optim.Adam([w], lr=1e-3)
        >>> sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
        >>> # steps 1 and 2 at 1e-3 and 5e-4, each moving at most ~lr, doubled for rounding
        >>> round(remaining_movement(opt, sched, iteration=0, end=2, iterations_per_epoch=1), 4)
        0.003
    """
    if iteration >= end:
        return 0.0
    if not isinstance(scheduler, torch.optim.lr_scheduler.StepLR):
        return math.inf
    future = np.arange(iteration + 1, end + 1)
    epochs = (future - 1) // iterations_per_epoch
    decays = epochs // scheduler.step_size - scheduler.last_epoch // scheduler.step_size
    bound = 0.0
    for group in optimizer.param_groups:
        beta1, beta2 = group["betas"]
        ratios = adam_ratio_bound(
            float(beta1), float(beta2), _step_count(optimizer, group) + (future - iteration)
        )
        if ratios is None:
            return math.inf
        rates = float(group["lr"]) * float(scheduler.gamma) ** decays
        bound = max(bound, 2.0 * float(np.sum(rates * ratios)))
    return bound


def predicted_freeze(
    training: FlowTrainingConfig,
    num_train: int,
    rms: float,
    betas: tuple[float, float] = (0.9, 0.999),
) -> int | None:
    """The iteration at which a schedule would freeze, were the weights' RMS ``rms`` throughout.

    The trainer's own test (:func:`remaining_movement` at each epoch's end against
    ``training.freeze_tolerance * rms``), run on the schedule alone: for plans and
    projections; a real run measures the RMS as it goes.

    Args:
        training: the flow's schedule.
        num_train: real training features (sets iterations and epoch length).
        rms: the weights' root mean square.
        betas: the trainer's Adam betas (torch's default).

    Returns:
        The iteration, or ``None`` when the schedule trains to its end.

    Example:
        >>> from gsmflow_nflows.training import FlowTrainingConfig
        >>> apy = FlowTrainingConfig(epochs=600, batch_size=200, lr=3e-4, lr_step_epochs=20,
        ...                          lr_gamma=0.55)
        >>> predicted_freeze(apy, 5932, rms=0.0106)  # of 17,400 iterations
        13290
    """
    tolerance = training.freeze_tolerance
    total = training.iterations(num_train)
    per_epoch = training.iterations_per_epoch(num_train)
    steps = np.arange(1, total + 1)
    ratios = adam_ratio_bound(betas[0], betas[1], steps)
    if tolerance <= 0 or ratios is None:
        return None
    rates = training.lr * training.lr_gamma ** (
        ((steps - 1) // per_epoch) // training.lr_step_epochs
    )
    # tail[k]: the bound on the movement of steps k + 1 .. total
    tail = np.append(np.cumsum((2.0 * rates * ratios)[::-1])[::-1], 0.0)
    for iteration in range(per_epoch, total, per_epoch):
        if tail[iteration] <= tolerance * rms:
            return iteration
    return None


def weights_rms(parameters: list[torch.Tensor]) -> float:
    """The root mean square of all the given tensors' entries together."""
    total = sum(float(p.detach().double().square().sum()) for p in parameters)
    count = sum(p.numel() for p in parameters)
    return math.sqrt(total / max(count, 1))


def _step_count(optimizer: torch.optim.Optimizer, group: dict[str, Any]) -> int:
    """Adam steps taken by ``group`` so far (0 before the first)."""
    for parameter in group["params"]:
        state = optimizer.state.get(parameter, {})
        if "step" in state:
            return int(state["step"])
    return 0
