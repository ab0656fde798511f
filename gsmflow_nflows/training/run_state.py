"""The state of one flow schedule: what a checkpoint holds and a resume restores."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from nflows.flows.base import Flow
from torch import Tensor

from gsmflow_nflows.runtime import randperm

__all__ = ["RunState"]


@dataclass
class RunState:
    """Flow, optimizer, scheduler, batch order and records of one schedule, at one iteration.

    A run is a deterministic function of its data, config and device, so
    saving this state at iteration ``k`` and restoring it continues to exactly
    the result of an uninterrupted run. The mined samples travel with the
    state but are saved apart from it (they do not change after mining; see
    :mod:`gsmflow_nflows.training.checkpoint`).

    Args:
        flow: The flow being trained.
        optimizer: Its optimizer.
        scheduler: The learning-rate schedule, stepped once per epoch.
        generator: The batch order's and the perturbation's random stream.
        order: A permutation of the training set's rows; batches are consecutive slices.
        position: The next batch's first index into ``order``.
        iteration: Optimizer steps taken.
        history: Evaluation records, in order.
        mined: Boundary samples ``(features, labels)`` appended to the training set, or ``None``.
        frozen_at: The iteration after which no step was taken (the rest of the schedule
            could not move the weights; see :mod:`gsmflow_nflows.training.frozen`), or ``None``.

    Example:
        >>> flow = torch.nn.Linear(1, 1)
        >>> opt = torch.optim.SGD(flow.parameters(), lr=0.1)
        >>> run = RunState(flow, opt, torch.optim.lr_scheduler.StepLR(opt, 1),
        ...                torch.Generator().manual_seed(0), torch.arange(4))
        >>> run.next_batch(3).tolist(), run.position
        ([0, 1, 2], 3)
    """

    flow: Flow | torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    generator: torch.Generator
    order: Tensor
    position: int = 0
    iteration: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    mined: tuple[Tensor, Tensor] | None = None
    frozen_at: int | None = None

    def next_batch(self, size: int) -> Tensor:
        """The next ``size`` row indices; a new random pass starts when the order runs out."""
        if self.position + size > self.order.shape[0]:
            self.order = randperm(self.order.shape[0], self.generator, self.order.device)
            self.position = 0
        index = self.order[self.position : self.position + size]
        self.position += size
        return index

    @property
    def lr(self) -> float:
        """The optimizer's current learning rate (of its first parameter group)."""
        return float(self.optimizer.param_groups[0]["lr"])

    def state_dict(self) -> dict[str, Any]:
        """Everything but the mined samples, as CPU tensors and plain Python values."""
        return {
            "iteration": self.iteration,
            "flow": self.flow.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "generator": self.generator.get_state(),
            "order": self.order.cpu(),
            "position": self.position,
            "history": self.history,
            "frozen_at": self.frozen_at,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (the order stays on this run's device)."""
        self.flow.load_state_dict(state["flow"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        self.order = state["order"].to(self.order.device)
        self.position = int(state["position"])
        self.iteration = int(state["iteration"])
        self.history = list(state["history"])
        frozen_at = state.get("frozen_at")
        self.frozen_at = None if frozen_at is None else int(frozen_at)
