"""The GSMFlow trainer: boundary sample mining, then the flow's schedule, resumable."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from time import monotonic
from typing import Any

import torch
from nflows.flows.base import Flow
from torch import Tensor

from gsmflow_nflows._checks import check_int
from gsmflow_nflows.data import GZSLData
from gsmflow_nflows.errors import ConfigError
from gsmflow_nflows.losses import (
    BoundarySampleMiner,
    PrototypeLoss,
    RelationNetwork,
    VisualPerturbation,
    class_means,
    train_relation_network,
)
from gsmflow_nflows.runtime import (
    Stream,
    randperm,
    resolve_device,
    seeded_generator,
    synchronized_clock,
)
from gsmflow_nflows.training.checkpoint import (
    load_checkpoint,
    load_mined,
    mined_file,
    save_checkpoint,
    save_mined,
)
from gsmflow_nflows.training.config import GSMFlowConfig
from gsmflow_nflows.training.flow_from_config import fit_semantic_mean, flow_from_config
from gsmflow_nflows.training.frozen import remaining_movement, weights_rms
from gsmflow_nflows.training.run_state import RunState
from gsmflow_nflows.training.step import PRECISIONS, train_step

__all__ = ["EvaluateFn", "GSMFlowTrainer", "ProgressFn", "resolve_device", "seeded_generator"]

#: ``progress(stage, done, total, losses)``: stage is "relation", "mining" or "flow".
ProgressFn = Callable[[str, int, int, dict[str, float]], None]
#: ``evaluate(iteration, flow) -> record``; records are kept (and checkpointed) in order.
EvaluateFn = Callable[[int, Flow], dict[str, Any]]


class GSMFlowTrainer:
    """Trains GSMFlow on one dataset with one config.

    Stages: (1) boundary sample mining (relation network, then mined samples
    appended to the training set) unless disabled; (2) the flow schedule: Adam
    on flow + encoder, StepLR per epoch, NLL + prototype loss on perturbed
    batches. Everything random comes from generators seeded by ``config.seed``,
    so a run is a deterministic function of (data, config) on a given device.
    With ``checkpoint_path``, the full state (flow, optimizer, scheduler, random
    state, batch order, mined samples, evaluation records) is saved every
    ``checkpoint_every`` iterations and at the end; ``fit(resume=True)``
    continues from it to exactly the result of an uninterrupted run.

    The paper's reference quirk that after mining the flow batch size becomes
    the relation batch size is NOT reproduced: the flow keeps its own batch size.

    Args:
        config: the run's configuration.
        data: the dataset (``split="test"`` for the final model, ``"val"`` for selection).
        device: where to train; ``None`` picks CUDA when available.
        precision: ``"fp32"`` or ``"bf16"`` (autocast of the flow's forward passes).
        checkpoint_path: file for checkpoints, or ``None``.
        checkpoint_every: iterations between checkpoints (with ``checkpoint_path``).
        checkpoint_seconds: also checkpoint once this much wall time has passed since the
            last checkpoint (or the start), so a killed run loses minutes, not up to
            ``checkpoint_every`` iterations; ``None``: by iterations only.

    Example:
        >>> trainer = GSMFlowTrainer(config, data, device="cpu")  # doctest: +SKIP
        >>> flow = trainer.fit()  # doctest: +SKIP
    """

    def __init__(
        self,
        config: GSMFlowConfig,
        data: GZSLData,
        *,
        device: str | torch.device | None = None,
        precision: str = "fp32",
        checkpoint_path: str | Path | None = None,
        checkpoint_every: int = 1000,
        checkpoint_seconds: float | None = None,
    ) -> None:
        if precision not in PRECISIONS:
            raise ConfigError(
                f"Unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}."
            )
        if not isinstance(checkpoint_every, int) or checkpoint_every < 1:
            raise ConfigError(
                f"checkpoint_every must be a positive integer, got {checkpoint_every!r}."
            )
        training = config.training
        if training.batch_size > data.num_train:
            raise ConfigError(
                f"training.batch_size {training.batch_size} is larger than the training set "
                f"({data.num_train} samples); choose a batch size <= {data.num_train}."
            )
        if config.mining.enabled and config.mining.relation_batch_size > data.num_train:
            raise ConfigError(
                f"mining.relation_batch_size {config.mining.relation_batch_size} is larger than "
                f"the training set ({data.num_train}); choose <= {data.num_train}."
            )
        self.config = config
        self.data = data
        self.device = resolve_device(device)
        self.precision = precision
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path is not None else None
        self.checkpoint_every = checkpoint_every
        if checkpoint_seconds is not None and not (
            isinstance(checkpoint_seconds, int | float) and checkpoint_seconds > 0
        ):
            raise ConfigError(
                f"checkpoint_seconds must be a positive number or None, got {checkpoint_seconds!r}."
            )
        self.checkpoint_seconds = checkpoint_seconds
        self.total_iterations = training.iterations(data.num_train)
        self.history: list[dict[str, Any]] = []
        self.flow: Flow | None = None
        #: The iteration after which the schedule could no longer move the weights by
        #: ``training.freeze_tolerance`` of their RMS, and took no more steps; ``None``: never.
        self.frozen_at: int | None = None
        # The digest of the mined samples saved beside the checkpoint by this fit, if any.
        self._mined_digest: str | None = None

    # ---- stage 1 -------------------------------------------------------------------------

    def mine(self, progress: ProgressFn | None = None) -> tuple[Tensor, Tensor]:
        """Train the relation network and mine one boundary sample per training sample."""
        mining, data = self.config.mining, self.data
        features = data.train_features.to(self.device)
        labels = data.train_labels.to(self.device)
        embeddings = data.seen_embeddings.to(self.device)
        net = RelationNetwork(
            data.feature_dim,
            data.embedding_dim,
            mining.relation_hidden,
            generator=seeded_generator(self.config.seed, Stream.RELATION_INIT),
        )
        net = net.to(self.device)

        def stage(name: str) -> Callable[[int, int], None] | None:
            if progress is None:
                return None
            return lambda done, total: progress(name, done, total, {})

        train_relation_network(
            net,
            features,
            labels,
            embeddings,
            epochs=mining.relation_epochs,
            batch_size=mining.relation_batch_size,
            lr=mining.relation_lr,
            weight_decay=mining.relation_weight_decay,
            generator=seeded_generator(self.config.seed, Stream.RELATION_BATCHES),
            progress=stage("relation"),
        )
        miner = BoundarySampleMiner(
            net,
            loops=mining.loops,
            lr=mining.lr,
            momentum=mining.momentum,
            entropy_weight=mining.entropy_weight,
            batch_size=mining.relation_batch_size,
        )
        return miner.mine(
            features,
            labels,
            embeddings,
            generator=seeded_generator(self.config.seed, Stream.MINING),
            progress=stage("mining"),
        )

    # ---- stage 2 -------------------------------------------------------------------------

    def _signature(self) -> dict[str, Any]:
        data = self.data
        return {
            "config": self.config.to_dict(),
            "dataset": {
                "name": data.name,
                "split": data.split,
                "train": data.num_train,
                "feature_dim": data.feature_dim,
                "embedding_dim": data.embedding_dim,
                "seen": data.num_seen,
                "unseen": data.num_unseen,
                "fingerprint": data.fingerprint(),
            },
            "precision": self.precision,
        }

    def build_flow(self) -> Flow:
        """A freshly initialised flow for this config and dataset, on the trainer's device."""
        data = self.data
        flow = flow_from_config(
            self.config.model,
            data.feature_dim,
            torch.cat([data.seen_embeddings, data.unseen_embeddings]),
            generator=seeded_generator(self.config.seed, Stream.FLOW_INIT),
            # Fitted on the real training features, before mining.
            **fit_semantic_mean(self.config.model, data),
        )
        return flow.to(self.device)

    def fit(
        self,
        *,
        resume: bool = False,
        progress: ProgressFn | None = None,
        progress_every: int = 10,
        evaluate: EvaluateFn | None = None,
        evaluate_at: Callable[[int], bool] | None = None,
        stop_after: int | None = None,
    ) -> Flow:
        """Run (or continue) the whole schedule and return the trained flow.

        Args:
            resume: continue from ``checkpoint_path`` if it exists.
            progress: called for every ``progress_every``-th iteration (and the last)
                with its losses and learning rate; the losses are read from the device
                once per 10 iterations at most, so calls may come in short bursts.
            progress_every: see ``progress``; 1 reports every iteration.
            evaluate: called as ``evaluate(iteration, flow)`` where ``evaluate_at``
                says so; its records land in ``self.history`` (reset by a fit
                that does not resume) and the checkpoints.
            evaluate_at: ``iteration -> bool``; default: never.
            stop_after: stop (after checkpointing) at this iteration, as if
                interrupted; for tests and for splitting long runs.

        Returns:
            The flow, in eval mode.
        """
        signature = self._signature()
        saved = self._saved_state(signature) if resume else None
        run = self._initial_state(saved, progress)
        if saved is not None:
            run.load_state_dict(saved)
        self.history = run.history  # the same list: evaluations append to both
        self._mined_digest = None if saved is None else saved.get("mined_digest")
        end = (
            self.total_iterations if stop_after is None else min(stop_after, self.total_iterations)
        )
        started = run.iteration
        self._train(run, end, signature, progress, progress_every, evaluate, evaluate_at)
        stopped_early = started < run.iteration < self.total_iterations
        if stopped_early and run.iteration % self.checkpoint_every != 0:
            self._checkpoint(run, signature)  # stopped between two checkpoints
        run.flow.eval()
        self.flow = run.flow
        self.frozen_at = run.frozen_at
        return run.flow

    def time_iterations(
        self, seconds: float = 0.5, warmup: int = 2, most: int = 1000
    ) -> tuple[float, Flow]:
        """Seconds per flow iteration on this machine, from a throwaway run.

        A fresh flow (no mining, no checkpoint, no evaluation) takes ``warmup``
        iterations, then timed ones, exactly as :meth:`fit` takes them, until
        ``seconds`` have passed (at least 3, at most ``most``). Nothing of the
        trainer's own run changes (``self.flow`` and ``self.history`` stay as they
        were), and the random streams are the run's own seeded ones, so a later
        :meth:`fit` gives what it would have given.

        Args:
            seconds: how long to time, ``>= 0`` (``math.inf``: exactly ``most`` iterations).
            warmup: untimed iterations first, ``>= 0``.
            most: the most timed iterations, ``>= 3``.

        Returns:
            ``(seconds per iteration, the throwaway flow in eval mode)``.

        Example:
            >>> per_iteration, _ = GSMFlowTrainer(config, data).time_iterations()  # doctest: +SKIP
        """
        warmup = check_int("warmup", warmup, minimum=0)
        most = check_int("most", most, minimum=3)
        run = self._fresh_state(mined=None)
        saved, self.checkpoint_path = self.checkpoint_path, None
        try:
            self._train(run, warmup, {}, None, 10, None, None)
            started, steps = synchronized_clock(self.device), 0
            while steps < 3 or (
                steps < most and synchronized_clock(self.device) - started < seconds
            ):
                self._train(run, run.iteration + 1, {}, None, 10, None, None)
                steps += 1
            per_iteration = (synchronized_clock(self.device) - started) / steps
        finally:
            self.checkpoint_path = saved
        run.flow.eval()
        return per_iteration, run.flow

    def _saved_state(self, signature: dict[str, Any]) -> dict[str, Any] | None:
        """The checkpoint to resume from (checked against this run), or ``None``."""
        if self.checkpoint_path is None or not self.checkpoint_path.exists():
            return None
        state = load_checkpoint(self.checkpoint_path, expect=signature)
        if "mined" not in state:  # saved beside the checkpoint, once (see save_mined)
            state["mined"] = load_mined(
                mined_file(self.checkpoint_path), state.get("mined_digest"), self.checkpoint_path
            )
        return state

    def _initial_state(self, saved: dict[str, Any] | None, progress: ProgressFn | None) -> RunState:
        """A fresh run at iteration 0 (its mined samples taken from ``saved`` when given)."""
        if saved is not None:
            mined = saved["mined"]
        elif self.config.mining.enabled:
            mined = tuple(t.cpu() for t in self.mine(progress))
        else:
            mined = None
        return self._fresh_state(mined)

    def _fresh_state(self, mined: tuple[Tensor, Tensor] | None) -> RunState:
        """Iteration 0 of the schedule: a new flow, optimizer and batch order."""
        config, training = self.config, self.config.training
        flow = self.build_flow()
        # Fused Adam: one kernel over all parameters instead of a Python loop per tensor.
        optimizer = torch.optim.Adam(
            flow.parameters(), lr=training.lr, weight_decay=training.weight_decay, fused=True
        )
        scheduler = torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=training.lr_step_epochs, gamma=training.lr_gamma
        )
        generator = seeded_generator(config.seed, Stream.FLOW_BATCHES)
        rows = self.data.num_train + (0 if mined is None else mined[0].shape[0])
        order = randperm(rows, generator, self.device)
        return RunState(flow, optimizer, scheduler, generator, order, mined=mined)

    def _training_set(self, run: RunState) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(features, labels) with the mined samples appended; seen embeddings and means."""
        data, device = self.data, self.device
        features = data.train_features.to(device)
        labels = data.train_labels.to(device)
        seen_means = class_means(features, labels, data.num_seen)
        if run.mined is not None:
            features = torch.cat([features, run.mined[0].to(device)])
            labels = torch.cat([labels, run.mined[1].to(device)])
        return features, labels, data.seen_embeddings.to(device), seen_means

    def _train(
        self,
        run: RunState,
        end: int,
        signature: dict[str, Any],
        progress: ProgressFn | None,
        progress_every: int,
        evaluate: EvaluateFn | None,
        evaluate_at: Callable[[int], bool] | None,
    ) -> None:
        """Steps from ``run.iteration`` to ``end``: evaluate and checkpoint where due."""
        training = self.config.training
        features, labels, seen_embeddings, seen_means = self._training_set(run)
        perturbation = (
            VisualPerturbation(training.perturbation_pi, training.perturbation_dropout)
            if training.perturbation_pi > 0
            else None
        )
        prototype = PrototypeLoss(training.prototype_weight)
        per_epoch = training.iterations_per_epoch(self.data.num_train)
        reports = _LossReports(progress, self.total_iterations, progress_every)
        run.flow.train()
        saved_at = monotonic()
        # Checked before a step: resuming a run that already reached its end is a no-op.
        while run.iteration < end:
            # Once frozen, the rest of the schedule cannot move the weights: it only counts
            # its iterations (the scheduler and the evaluation points stay where they were).
            stepping = run.frozen_at is None
            if stepping:
                index = run.next_batch(training.batch_size)
                losses = train_step(
                    run.flow,
                    run.optimizer,
                    features[index],
                    seen_embeddings[labels[index]],
                    seen_embeddings=seen_embeddings,
                    seen_means=seen_means,
                    perturbation=perturbation,
                    prototype=prototype,
                    generator=run.generator,
                    precision=self.precision,
                )
            run.iteration += 1
            if run.iteration % per_epoch == 0:
                run.scheduler.step()
                checks = stepping and training.freeze_tolerance > 0
                if checks and run.iteration < self.total_iterations:
                    self._check_frozen(run, per_epoch)
            if (
                stepping
                and progress is not None
                and (run.iteration % progress_every == 0 or run.iteration == self.total_iterations)
            ):
                reports.add(run.iteration, losses, run.lr)
            if evaluate is not None and evaluate_at is not None and evaluate_at(run.iteration):
                run.flow.eval()
                run.history.append(evaluate(run.iteration, run.flow))
                run.flow.train()
            # While stepping: by iterations, by wall time, and where the run froze; frozen,
            # only at the end (nothing changes in between).
            due = stepping and (
                run.frozen_at is not None
                or run.iteration % self.checkpoint_every == 0
                or (
                    self.checkpoint_seconds is not None
                    and monotonic() - saved_at >= self.checkpoint_seconds
                )
            )
            if due or run.iteration == self.total_iterations:
                reports.send()  # a checkpoint never gets ahead of what was reported
                self._checkpoint(run, signature)
                saved_at = monotonic()
        reports.send()

    def _check_frozen(self, run: RunState, per_epoch: int) -> None:
        """Mark ``run`` frozen when no weight can still move by ``freeze_tolerance`` x their RMS.

        The bound comes from the optimizer's and scheduler's state
        (:func:`~gsmflow_nflows.training.frozen.remaining_movement`); from then on the
        schedule only counts its iterations (evaluations stay where they were).
        """
        movement = remaining_movement(
            run.optimizer,
            run.scheduler,
            iteration=run.iteration,
            end=self.total_iterations,
            iterations_per_epoch=per_epoch,
        )
        tolerance = self.config.training.freeze_tolerance
        if movement <= tolerance * weights_rms(list(run.flow.parameters())):
            run.frozen_at = run.iteration

    def _checkpoint(self, run: RunState, signature: dict[str, Any]) -> None:
        """Save ``run`` (its mined samples once, in their own file, the first time)."""
        if self.checkpoint_path is None:
            return
        if run.mined is not None and self._mined_digest is None:
            self._mined_digest = save_mined(mined_file(self.checkpoint_path), run.mined)
        save_checkpoint(
            self.checkpoint_path,
            {**signature, **run.state_dict(), "mined_digest": self._mined_digest},
        )


#: At most one host read of the losses per this many iterations (the default ``progress_every``).
READ_EVERY = 10


class _LossReports:
    """The flow's losses for ``progress``, read from the device in batches.

    ``float(loss)`` waits for the device (a CUDA synchronisation); reporting every
    iteration that way would stall the queue of kernels each step. The losses of
    the reported iterations are kept as tensors and read in one transfer once
    they cover :data:`READ_EVERY` iterations (or at :meth:`send`), then reported
    in order: ``progress_every=1`` costs one read per 10 iterations, as the
    default ``progress_every=10`` does.
    """

    def __init__(self, progress: ProgressFn | None, total: int, every: int) -> None:
        self.progress, self.total = progress, total
        self.batch = max(1, -(-READ_EVERY // every))  # reported iterations per read
        self.pending: list[tuple[int, dict[str, Tensor], float]] = []

    def add(self, iteration: int, losses: dict[str, Tensor], lr: float) -> None:
        """Keep one iteration's (detached) losses and learning rate; report when enough wait."""
        self.pending.append((iteration, losses, lr))
        if len(self.pending) >= self.batch:
            self.send()

    def send(self) -> None:
        """Read every waiting iteration's losses in one transfer and report them in order."""
        if self.progress is None or not self.pending:
            return
        names = list(self.pending[0][1])
        values = torch.stack(
            [losses[name].double() for _, losses, _ in self.pending for name in names]
        ).tolist()
        for index, (iteration, _, lr) in enumerate(self.pending):
            row = values[index * len(names) : (index + 1) * len(names)]
            losses = dict(zip(names, row, strict=True))
            self.progress("flow", iteration, self.total, {**losses, "lr": lr})
        self.pending = []
