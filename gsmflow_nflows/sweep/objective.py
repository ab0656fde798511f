"""The sweep's objective: validation H of one config, trained on the validation split only.

A trial trains on ``load_dataset(name, split="val")`` (``train_loc``, with the
``val_loc`` classes as unseen), is evaluated on those validation classes at the
``val`` protocol's evaluation points, and reports after every evaluation, so a
scheduler (ASHA) can stop it early. It never loads the test split: the only data
it reads comes from :data:`VALIDATION_SPLIT`.

Resume: each report carries a Tune checkpoint holding the trainer's own
checkpoint file (flow, optimiser, random state, evaluation records) taken at
that evaluation; a trial Tune restores continues from it to the same records an
uninterrupted trial gives.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from gsmflow_nflows.data import load_dataset
from gsmflow_nflows.sweep.adapter import validation_evaluations
from gsmflow_nflows.sweep.space import apply_overrides
from gsmflow_nflows.training.config import GSMFlowConfig

#: The only split the objective loads.
VALIDATION_SPLIT = "val"
#: Files of a trial's checkpoint folder: the trainer's checkpoint, the last reported iteration.
TRAINER_FILE = "trainer.pt"
PROGRESS_FILE = "progress.json"


class TrialSession(Protocol):
    """Where a trial reports (Tune's :class:`~gsmflow_nflows.sweep.tune_api.TuneSession`)."""

    def report(self, metrics: dict[str, Any], folder: Path) -> None:
        """Report ``metrics`` with the checkpoint folder ``folder``."""

    def restored(self) -> AbstractContextManager[Path | None]:
        """The checkpoint folder the trial was restored from, or ``None``."""


@dataclass(frozen=True)
class SearchSetup:
    """What every search trial shares: the data, the preset's config (a dict), the seed."""

    dataset: str
    data_root: str | None
    base_config: dict[str, Any]
    seed: int = 0
    threads: int = 1
    precision: str = "fp32"
    device: str | None = "cpu"


def evaluation_summary(record: Mapping[str, Any]) -> dict[str, Any]:
    """One evaluation: the classifier epoch with the best H (first on ties), its S/U/H, best T1.

    Example:
        >>> evaluation_summary({"iteration": 20, "zsl_t1": [0.5, 0.7],
        ...                     "gzsl": [{"S": 0.9, "U": 0.1, "H": 0.18},
        ...                              {"S": 0.8, "U": 0.3, "H": 0.436}]})["epoch"]
        2
    """
    gzsl = record["gzsl"]
    epoch = max(range(len(gzsl)), key=lambda index: gzsl[index]["H"])
    scores = gzsl[epoch]
    return {
        "iteration": int(record["iteration"]),
        "epoch": epoch + 1,
        "S": scores["S"],
        "U": scores["U"],
        "H": scores["H"],
        "T1": max(record["zsl_t1"]),
    }


def summarise(history: Sequence[Mapping[str, Any]], total: int, device: str) -> dict[str, Any]:
    """The metrics a trial reports after an evaluation (``best_*``: best validation H so far).

    ``evaluations`` is every evaluation's :func:`evaluation_summary` as a JSON string.

    Example:
        >>> record = {"iteration": 20, "zsl_t1": [0.5], "gzsl": [{"S": 0.9, "U": 0.5, "H": 0.6}]}
        >>> metrics = summarise([record], 40, "cpu")
        >>> metrics["best_H"], metrics["finished"]
        (0.6, False)
    """
    evaluations = [evaluation_summary(record) for record in history]
    best = max(evaluations, key=lambda item: item["H"])
    last = evaluations[-1]
    return {
        "iteration": last["iteration"],
        "total_iterations": int(total),
        "finished": last["iteration"] >= total,
        "H": last["H"],
        "S": last["S"],
        "U": last["U"],
        "T1": last["T1"],
        "best_H": best["H"],
        "best_S": best["S"],
        "best_U": best["U"],
        "best_iteration": best["iteration"],
        "best_epoch": best["epoch"],
        "best_T1": max(item["T1"] for item in evaluations),
        "evaluations": json.dumps(evaluations),
        "device": device,
    }


def trial_config(overrides: Mapping[str, Any], setup: SearchSetup) -> GSMFlowConfig:
    """The preset's config with a trial's ``section.field`` values, seeded.

    Example:
        >>> setup = SearchSetup("digits", None, GSMFlowConfig().to_dict())
        >>> trial_config({"training.lr": 1e-3}, setup).training.lr
        0.001
    """
    base = GSMFlowConfig.from_dict(setup.base_config)
    return apply_overrides(base, overrides).with_seed(setup.seed)


@dataclass
class _Scratch:
    folder: Path

    def __enter__(self) -> Path:
        return self.folder

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _restore(session: TrialSession, state: Path) -> int:
    """Copy the restored checkpoint (if any) into ``state``; the iteration it reached."""
    with session.restored() as folder:
        if folder is None:
            return 0
        for name in (TRAINER_FILE, PROGRESS_FILE):
            shutil.copy2(Path(folder) / name, state / name)
    return int(json.loads((state / PROGRESS_FILE).read_text())["iteration"])


def validation_trial(
    overrides: Mapping[str, Any], setup: SearchSetup, session: TrialSession
) -> dict[str, Any] | None:
    """Train one config on the validation split, reporting validation H after each evaluation.

    Args:
        overrides: the trial's ``section.field -> value``.
        setup: the shared :class:`SearchSetup`.
        session: where to report (Tune's, or a test's).

    Returns:
        The last metrics reported (``None`` when a restored trial had nothing left to do).

    Example:
        >>> validation_trial({"training.lr": 1e-3}, setup, session)["best_H"]  # doctest: +SKIP
        0.52
    """
    torch.set_num_threads(max(1, setup.threads))
    config = trial_config(overrides, setup)
    val_data = load_dataset(setup.dataset, data_root=setup.data_root, split=VALIDATION_SPLIT)
    with _Scratch(Path(tempfile.mkdtemp(prefix="gsmflow-trial-"))) as work:
        state = work / "checkpoint"
        state.mkdir()
        after = _restore(session, state)
        metrics = None
        evaluations: Iterator[tuple[list[dict[str, Any]], int, str]] = validation_evaluations(
            config,
            val_data,
            checkpoint_path=state / TRAINER_FILE,
            after=after,
            precision=setup.precision,
            device=setup.device,
        )
        for history, total, device in evaluations:
            metrics = summarise(history, total, device)
            (state / PROGRESS_FILE).write_text(json.dumps({"iteration": metrics["iteration"]}))
            session.report(metrics, state)
        return metrics


def search_trial(params: dict[str, Any], setup: SearchSetup) -> None:
    """The Tune trainable of the search: :func:`validation_trial` with Tune's session.

    Example:
        >>> tune.with_parameters(search_trial, setup=setup)  # doctest: +SKIP
    """
    from gsmflow_nflows.sweep.tune_api import TuneSession

    validation_trial(params, setup, TuneSession())
