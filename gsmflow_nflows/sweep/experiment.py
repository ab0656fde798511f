"""Running one Tune experiment of a sweep: fresh or restored, and known to have finished.

A sweep's storage folder holds one Tune experiment per phase (``search``,
``final``; ``table`` for ``gsmflow table``) and ``request.json``, what was asked
for. ``--resume`` restores each phase with ``tune.Tuner.restore``: finished
trials are kept as they are (not re-run), unfinished ones continue from their
latest checkpoint, trials never started start.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gsmflow_nflows.atomic_write import write_atomically
from gsmflow_nflows.sweep.tune_api import RayAPI, SweepError

#: The file in a storage folder that records what the sweep there was asked to do.
REQUEST_FILE = "request.json"


def claim_storage(storage: Path, request: dict[str, Any], *, resume: bool) -> None:
    """Make ``storage`` this sweep's folder, or check that ``--resume`` continues the same sweep.

    Without ``resume`` a folder that already holds a sweep is refused (nothing is
    overwritten); with it the folder must hold one, asked for with the same
    ``request`` (dataset, preset, space, trials, seeds ...).

    Raises:
        SweepError: naming the folder and the fix.

    Example:
        >>> claim_storage(Path("sweep.tune"), {"dataset": "digits"}, resume=False)  # doctest: +SKIP
    """
    recorded = storage / REQUEST_FILE
    if not resume:
        if recorded.exists():
            raise SweepError(
                f"{storage} already holds a sweep; continue it with resume=True, or choose another "
                "storage folder (or delete that folder)."
            )
        storage.mkdir(parents=True, exist_ok=True)
        write_atomically(recorded, json.dumps(request, indent=2, sort_keys=True) + "\n")
        return
    if not recorded.exists():
        raise SweepError(
            f"nothing to resume in {storage} (no {REQUEST_FILE}); start the sweep without resume."
        )
    try:
        before = json.loads(recorded.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise SweepError(f"cannot read {recorded}: {error}; start a new sweep elsewhere.") from None
    changed = sorted(
        key for key in set(before) | set(request) if before.get(key) != request.get(key)
    )
    if changed:
        raise SweepError(
            f"resume continues the sweep in {storage} as it was asked for, but "
            f"{', '.join(changed)} differ; use the original options or another storage folder."
        )


@dataclass
class Job:
    """One Tune experiment: what to run, how many trials, on what resources."""

    name: str
    trainable: Any
    param_space: dict[str, Any]
    expected: int
    num_samples: int = 1
    scheduler: Any = None
    max_concurrent: int | None = None
    search_seed: int | None = None
    resources: dict[str, float] = field(default_factory=lambda: {"cpu": 1})
    callbacks: Sequence[Any] = ()


def progress_printer(api: RayAPI) -> Any:
    """A Tune callback printing one line to stderr per validation report and per finished trial.

    Example:
        >>> callback = progress_printer(require_ray())  # doctest: +SKIP
    """

    class ProgressPrinter(api.tune.Callback):  # type: ignore[name-defined]
        def on_trial_result(
            self, iteration: int, trials: Any, trial: Any, result: dict[str, Any], **info: Any
        ) -> None:
            if "best_H" in result:
                print(
                    f"{trial.trial_id}: iteration {result['iteration']}/"
                    f"{result['total_iterations']}  validation H {100 * result['H']:.1f}  "
                    f"(best {100 * result['best_H']:.1f})",
                    file=sys.stderr,
                    flush=True,
                )

        def on_trial_complete(self, iteration: int, trials: Any, trial: Any, **info: Any) -> None:
            last = trial.last_result or {}
            stopped = "best_H" in last and not last.get("finished")
            state = "stopped early by the scheduler" if stopped else "finished"
            print(f"{trial.trial_id}: {state}", file=sys.stderr, flush=True)

        def on_trial_error(self, iteration: int, trials: Any, trial: Any, **info: Any) -> None:
            print(f"{trial.trial_id}: failed (see results)", file=sys.stderr, flush=True)

    return ProgressPrinter()


def trial_id(result: Any) -> str:
    """A Tune result's trial id (``"3e7ed_00000"``), from its metrics or its folder's name."""
    reported = (result.metrics or {}).get("trial_id")
    if reported:
        return str(reported)
    found = re.search(r"([0-9a-f]{5}_\d{5})", Path(str(result.path)).name)
    return found.group(1) if found else Path(str(result.path)).name


def saved_statuses(api: RayAPI, path: Path) -> dict[str, str]:
    """Each trial's status (``TERMINATED``, ``ERROR``, ``RUNNING``, ``PENDING`` ...) as saved.

    Read back from the experiment state Tune wrote last, which it saves before
    stopping trials on an interruption: the statuses it returns from ``fit`` are
    ``TERMINATED`` for interrupted trials too, and a restored trial's ``done``
    flag is not reliable either.
    """
    analysis = api.tune.ExperimentAnalysis(str(path))
    return {trial.trial_id: str(trial.status) for trial in analysis.trials}


#: The statuses of a trial that will not run again.
FINAL_STATUSES = ("TERMINATED", "ERROR")


def run_job(api: RayAPI, job: Job, storage: Path, *, resume: bool) -> list[Any]:
    """Run (``resume``: restore and continue) ``job`` under ``storage/job.name``.

    Returns:
        Tune's results, one per trial, in trial order.

    Raises:
        SweepError: the run was interrupted (Ctrl+C) before every trial finished; the
            message says to continue with ``--resume``.

    Example:
        >>> results = run_job(api, job, Path("sweep.tune"), resume=False)  # doctest: +SKIP
    """
    tune = api.tune
    trainable = tune.with_resources(job.trainable, dict(job.resources))
    path = storage / job.name
    if resume and tune.Tuner.can_restore(str(path)):
        tuner = tune.Tuner.restore(str(path), trainable=trainable, resume_unfinished=True)
    else:
        from ray.tune.search import BasicVariantGenerator

        tuner = tune.Tuner(
            trainable,
            param_space=job.param_space,
            tune_config=tune.TuneConfig(
                num_samples=job.num_samples,
                scheduler=job.scheduler,
                search_alg=BasicVariantGenerator(
                    random_state=job.search_seed, max_concurrent=job.max_concurrent or 0
                ),
                reuse_actors=True,
            ),
            run_config=api.RunConfig(
                name=job.name,
                storage_path=str(storage),
                callbacks=[progress_printer(api), *job.callbacks],
                checkpoint_config=api.CheckpointConfig(num_to_keep=2),
                verbose=0,
            ),
        )
    results = sorted(tuner.fit(), key=trial_id)
    statuses = saved_statuses(api, path)
    finished = sum(status in FINAL_STATUSES for status in statuses.values())
    if finished < job.expected:
        command = "table" if job.name == "table" else "sweep"
        raise SweepError(
            f"the {job.name} phase was interrupted with {finished} of {job.expected} trials "
            f"finished; resume it to continue (`gsmflow {command} ... --resume`, or "
            f"resume=True; state in {storage})."
        )
    return results
