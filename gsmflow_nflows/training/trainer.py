"""The GSMFlow trainer: boundary sample mining, then the flow's schedule, resumable."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from nflows.flows.base import Flow
from torch import Tensor

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
from gsmflow_nflows.model import build_gsmflow
from gsmflow_nflows.semantic_mean import fit_ridge_map, residual_scale, residual_shrinkage
from gsmflow_nflows.training.checkpoint import load_checkpoint, save_checkpoint
from gsmflow_nflows.training.config import GSMFlowConfig
from gsmflow_nflows.training.step import train_step

#: ``progress(stage, done, total, losses)``: stage is "relation", "mining" or "flow".
ProgressFn = Callable[[str, int, int, dict[str, float]], None]
#: ``evaluate(iteration, flow) -> record``; records are kept (and checkpointed) in order.
EvaluateFn = Callable[[int, Flow], dict[str, Any]]


def seeded_generator(*parts: int) -> torch.Generator:
    """A CPU generator seeded from several integers (seed, stage, iteration ...)."""
    seed = 0
    for part in parts:
        seed = (seed * 1_000_003 + int(part)) % (2**63 - 1)
    return torch.Generator().manual_seed(seed)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` -> CUDA if available, else CPU; strings are checked for availability."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"Unknown device {device!r}; use cpu, cuda or cuda:N.") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"Device {device!r} asked for, but CUDA is not available; use device='cpu'."
        )
    return resolved


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
    ) -> None:
        if precision not in ("fp32", "bf16"):
            raise ConfigError(f"Unknown precision {precision!r}; choose fp32 or bf16.")
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
        self.total_iterations = training.iterations(data.num_train)
        self.history: list[dict[str, Any]] = []
        self.flow: Flow | None = None

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
            generator=seeded_generator(self.config.seed, 0),
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
            generator=seeded_generator(self.config.seed, 1),
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
            generator=seeded_generator(self.config.seed, 2),
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
        model, data = self.config.model, self.data
        all_embeddings = torch.cat([data.seen_embeddings, data.unseen_embeddings])
        semantic_mean = known = scale = None
        shrinkage = 0.0
        if model.conditioning == "mean":  # fitted on the real training features, before mining
            means = class_means(data.train_features.double(), data.train_labels, data.num_seen)
            semantic_mean = fit_ridge_map(data.seen_embeddings, means, alpha=model.mean_ridge_alpha)
            known = (data.seen_embeddings, means)
            if model.scale_residual:
                scale = residual_scale(data.train_features, data.train_labels, data.num_seen)
                if model.shrink_residual:
                    shrinkage = residual_shrinkage(
                        data.train_features, data.train_labels, data.num_seen, scale
                    )
        flow = build_gsmflow(
            data.feature_dim,
            all_embeddings,
            num_blocks=model.num_blocks,
            hidden_features=model.hidden_features,
            semantic_features=model.semantic_features,
            clamp=model.clamp,
            permutation=model.permutation,
            relative_positioning=model.relative_positioning,
            conditioning=model.conditioning,
            semantic_mean=semantic_mean,
            known_means=known,
            semantic_scale=scale,
            semantic_shrinkage=shrinkage,
            generator=seeded_generator(self.config.seed, 3),
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
            progress: called every ``progress_every`` iterations with the losses.
            progress_every: see ``progress``.
            evaluate: called as ``evaluate(iteration, flow)`` where ``evaluate_at``
                says so; its records land in ``self.history`` (reset by a fit
                that does not resume) and the checkpoints.
            evaluate_at: ``iteration -> bool``; default: never.
            stop_after: stop (after checkpointing) at this iteration, as if
                interrupted; for tests and for splitting long runs.

        Returns:
            The flow, in eval mode.
        """
        config, data, device = self.config, self.data, self.device
        training = config.training
        signature = self._signature()
        state = None
        if resume and self.checkpoint_path is not None and self.checkpoint_path.exists():
            state = load_checkpoint(self.checkpoint_path, expect=signature)
        if state is None:  # a fresh run: no record of an earlier fit() carries over
            self.history = []

        if state is not None:
            mined = state["mined"]
        elif config.mining.enabled:
            mined = tuple(t.cpu() for t in self.mine(progress))
        else:
            mined = None

        features = data.train_features.to(device)
        labels = data.train_labels.to(device)
        seen_embeddings = data.seen_embeddings.to(device)
        seen_means = class_means(features, labels, data.num_seen)
        if mined is not None:
            features = torch.cat([features, mined[0].to(device)])
            labels = torch.cat([labels, mined[1].to(device)])

        flow = self.build_flow()
        # Fused Adam: one kernel over all parameters instead of a Python loop per tensor.
        optimizer = torch.optim.Adam(
            flow.parameters(), lr=training.lr, weight_decay=training.weight_decay, fused=True
        )
        scheduler = torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=training.lr_step_epochs, gamma=training.lr_gamma
        )
        generator = seeded_generator(config.seed, 4)
        order = torch.randperm(features.shape[0], generator=generator)
        position, iteration = 0, 0
        if state is not None:
            flow.load_state_dict(state["flow"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            generator.set_state(state["generator"])
            order, position, iteration = state["order"], state["position"], state["iteration"]
            self.history = list(state["history"])
        order = order.to(device)

        perturbation = (
            VisualPerturbation(training.perturbation_pi, training.perturbation_dropout)
            if training.perturbation_pi > 0
            else None
        )
        prototype = PrototypeLoss(training.prototype_weight)
        per_epoch = training.iterations_per_epoch(data.num_train)
        batch = training.batch_size

        def checkpoint() -> None:
            if self.checkpoint_path is None:
                return
            save_checkpoint(
                self.checkpoint_path,
                {
                    **signature,
                    "iteration": iteration,
                    "flow": flow.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "generator": generator.get_state(),
                    "order": order.cpu(),
                    "position": position,
                    "mined": mined,
                    "history": self.history,
                },
            )

        flow.train()
        end = (
            self.total_iterations if stop_after is None else min(stop_after, self.total_iterations)
        )
        # Checked before a step: resuming a run that already reached its end is a no-op.
        while iteration < end:
            if position + batch > order.shape[0]:  # a new pass over the (augmented) set
                order = torch.randperm(features.shape[0], generator=generator).to(device)
                position = 0
            index = order[position : position + batch]
            position += batch
            batch_labels = labels[index]
            losses = train_step(
                flow,
                optimizer,
                features[index],
                seen_embeddings[batch_labels],
                seen_embeddings=seen_embeddings,
                seen_means=seen_means,
                perturbation=perturbation,
                prototype=prototype,
                generator=generator,
                precision=self.precision,
            )
            iteration += 1
            if iteration % per_epoch == 0:
                scheduler.step()
            if progress is not None and (
                iteration % progress_every == 0 or iteration == self.total_iterations
            ):
                values = {name: float(value) for name, value in losses.items()}
                values["lr"] = optimizer.param_groups[0]["lr"]
                progress("flow", iteration, self.total_iterations, values)
            if evaluate is not None and evaluate_at is not None and evaluate_at(iteration):
                flow.eval()
                self.history.append(evaluate(iteration, flow))
                flow.train()
            if iteration % self.checkpoint_every == 0 or iteration == self.total_iterations:
                checkpoint()
            if stop_after is not None and iteration >= stop_after:
                if iteration % self.checkpoint_every != 0:
                    checkpoint()
                break
        flow.eval()
        self.flow = flow
        return flow
