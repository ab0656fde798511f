"""CSV logs of a run as it goes: the flow's losses, every evaluation, the mining stages.

A :class:`RunLog` is a progress callback (``progress(stage, done, total,
losses)``, as the trainer calls it) and an evaluation callback
(``on_evaluation(seed, split, record)``, as the protocols call it). It writes
three CSV files into its folder, one row at a time, each row flushed at once,
so a killed run keeps everything it logged:

* ``flow.csv``: ``seed, split, iteration, nll, prototype, loss, lr``, one row
  per reported flow iteration;
* ``evaluations.csv``: ``seed, split, iteration, classifier_epoch, S, U, H,
  t1_epoch, T1, calibration``, one row per scored classifier epoch of every
  evaluation (accuracies as fractions; ``classifier_epoch`` is the GZSL
  classifier's epoch, ``t1_epoch`` the ZSL classifier's, which may train more
  epochs; ``calibration`` the calibrated-stacking offset, 0 for none);
* ``mining.csv``: ``seed, split, stage, done, total``, the relation network's
  batches and the mining loops' batches.

``split`` is the split a flow trains for: ``test`` (trained on trainval, scored
on the test sets) or ``val`` (trained on ``train_loc``, scored on ``val_loc``).

No row is written twice. A resumed run (``resume=True``) appends to the files
and skips what they already hold: the iterations up to the last one logged
for a seed and split (a resumed run replays the iterations after its
checkpoint exactly, so those rows are the same), and evaluation rows already
there. The same rule drops the rows of a retraining that replays a schedule
logged before (protocol ``val`` trains the test flow twice when T1 is chosen
elsewhere). Without ``resume`` the files start over.

With ``tensorboard=True`` (the ``tensorboard`` package: ``pip install
"gsmflow-nflows[tensorboard]"``) the same scalars also go to TensorBoard event
files under ``tensorboard/``: the losses of every 10th iteration (the CSV file
has them all), and for an evaluation, its last scored epoch.
"""

from __future__ import annotations

import csv
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from gsmflow_nflows.errors import ConfigError, WriteError

__all__ = [
    "EVALUATION_COLUMNS",
    "FLOW_COLUMNS",
    "LOG_FILES",
    "MINING_COLUMNS",
    "RunLog",
    "RunLogTables",
    "evaluation_rows",
    "parse_stage",
    "read_run_log",
    "tensorboard_available",
]

FLOW_COLUMNS = ("seed", "split", "iteration", "nll", "prototype", "loss", "lr")
EVALUATION_COLUMNS = (
    "seed",
    "split",
    "iteration",
    "classifier_epoch",
    "S",
    "U",
    "H",
    "t1_epoch",
    "T1",
    "calibration",
)
MINING_COLUMNS = ("seed", "split", "stage", "done", "total")
#: The log's files and their columns.
LOG_FILES = {
    "flow": ("flow.csv", FLOW_COLUMNS),
    "evaluations": ("evaluations.csv", EVALUATION_COLUMNS),
    "mining": ("mining.csv", MINING_COLUMNS),
}
_INTEGERS = {"seed", "iteration", "classifier_epoch", "t1_epoch", "done", "total"}
_TEXT = {"split", "stage"}
TENSORBOARD_EXTRA = 'pip install "gsmflow-nflows[tensorboard]"'
#: TensorBoard gets the losses of every this many iterations (and the last): a scalar costs
#: it 0.05-0.1 ms, and it keeps 1,000 points per curve when it loads them anyway.
TENSORBOARD_EVERY = 10


def parse_stage(stage: str) -> tuple[int | None, str, str]:
    """``(seed, split, kind)`` of a progress stage name, ``"[seed N ][val ]KIND"``.

    The trainer names its stages ``relation``, ``mining`` and ``flow``; the
    protocols put ``val`` before those of a flow trained on the validation split,
    and :func:`~gsmflow_nflows.experiment.run_bench` puts ``seed N`` before all.

    Example:
        >>> parse_stage("seed 3 val flow"), parse_stage("mining")
        ((3, 'val', 'flow'), (None, 'test', 'mining'))
    """
    words = stage.split()
    seed = None
    if len(words) >= 3 and words[0] == "seed" and words[1].isdigit():
        seed, words = int(words[1]), words[2:]
    split = "test"
    if len(words) >= 2 and words[0] == "val":
        split, words = "val", words[1:]
    return seed, split, " ".join(words)


def evaluation_rows(seed: int, split: str, record: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``evaluations.csv`` rows of one evaluation record, one per scored classifier epoch.

    ``record`` is :func:`~gsmflow_nflows.evaluation.protocols.evaluate_flow`'s: its
    ``gzsl`` and ``zsl_t1`` lists score the last ``len(list)`` epochs of classifiers
    that trained ``gzsl_epochs`` and ``zsl_epochs`` epochs. Row ``i`` pairs the
    ``i``-th entry of each list; where one list is shorter, its cells are empty.

    Example:
        >>> record = {"iteration": 40, "gzsl": [{"S": 0.9, "U": 0.5, "H": 0.6}],
        ...           "zsl_t1": [0.7], "gzsl_epochs": 20, "zsl_epochs": 50}
        >>> row = evaluation_rows(0, "test", record)[0]
        >>> row["classifier_epoch"], row["t1_epoch"], row["H"], row["T1"]
        (20, 50, 0.6, 0.7)
    """
    gzsl, zsl = record["gzsl"], record["zsl_t1"]
    first_gzsl = record["gzsl_epochs"] - len(gzsl) + 1
    first_zsl = record["zsl_epochs"] - len(zsl) + 1
    rows = []
    for index in range(max(len(gzsl), len(zsl))):
        scores = gzsl[index] if index < len(gzsl) else {}
        rows.append(
            {
                "seed": seed,
                "split": split,
                "iteration": record["iteration"],
                "classifier_epoch": first_gzsl + index if index < len(gzsl) else "",
                "S": scores.get("S", ""),
                "U": scores.get("U", ""),
                "H": scores.get("H", ""),
                "t1_epoch": first_zsl + index if index < len(zsl) else "",
                "T1": zsl[index] if index < len(zsl) else "",
                "calibration": float(record.get("calibration", 0.0)),
            }
        )
    return rows


def tensorboard_available() -> bool:
    """Whether the ``tensorboard`` package (which TensorBoard event files need) is installed.

    Example:
        >>> isinstance(tensorboard_available(), bool)
        True
    """
    return importlib.util.find_spec("tensorboard") is not None


def _evaluation_key(row: dict[str, Any]) -> tuple[Any, ...]:
    """What makes an evaluation row the same row: seed, split, iteration, epochs, calibrated."""
    cells = ("seed", "split", "iteration", "classifier_epoch", "t1_epoch")
    text = tuple("" if row[name] is None else str(row[name]) for name in cells)
    return (*text, bool(row["calibration"]))


class _CSVFile:
    """One log file, appended row by row and flushed after each row."""

    def __init__(self, path: Path, columns: tuple[str, ...], resume: bool) -> None:
        self.path, self.columns = path, columns
        existing = _read_rows(path, columns, repair=True) if resume and path.exists() else None
        self.rows: list[dict[str, Any]] = existing or []
        try:
            self.stream: IO[str] = open(path, "a" if existing is not None else "w", newline="")
            self.writer = csv.DictWriter(self.stream, fieldnames=columns)
            if existing is None:
                self.writer.writeheader()
                self.stream.flush()
        except OSError as error:
            raise _write_error(path, error) from error

    def write(self, row: dict[str, Any]) -> None:
        try:
            self.writer.writerow(row)
            self.stream.flush()
        except OSError as error:
            raise _write_error(self.path, error) from error

    def close(self) -> None:
        self.stream.close()


def _write_error(path: Path, error: OSError) -> WriteError:
    reason = error.strerror or str(error) or type(error).__name__
    return WriteError(f"cannot write the run log {path}: {reason}; free space or log elsewhere.")


def _read_rows(path: Path, columns: tuple[str, ...], *, repair: bool) -> list[dict[str, Any]]:
    """The complete rows of a log file, typed.

    A last line without its newline (the run was killed in the middle of a row)
    is skipped, and with ``repair`` also cut from the file, so rows appended
    next start on a line of their own.
    """
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        data = data[: data.rfind(b"\n") + 1]
        if repair:
            with open(path, "r+b") as stream:
                stream.truncate(len(data))
    lines = data.decode().splitlines()
    if not lines:
        return []
    if tuple(next(csv.reader([lines[0]]))) != columns:
        raise ConfigError(
            f"{path} holds other columns than a run log's ({', '.join(columns)}); "
            "use a folder that holds a run log of this version, or a new one."
        )
    return [_typed(row) for row in csv.DictReader(lines)]


def _typed(row: dict[str, str]) -> dict[str, Any]:
    typed: dict[str, Any] = {}
    for name, value in row.items():
        if name in _TEXT:
            typed[name] = value
        elif value == "":
            typed[name] = None
        elif name in _INTEGERS:
            typed[name] = int(value)
        else:
            typed[name] = float(value)
    return typed


class RunLog:
    """CSV logs (and optionally TensorBoard files) of a run, written as it goes.

    Call it as a progress callback and pass :meth:`evaluation` as the
    evaluation callback; close it at the end (or use it as a context manager).
    See the module docstring for the files and the no-duplicates rule.

    Args:
        folder: where the files go (created if missing).
        seed: the seed of stages whose names carry none (``gsmflow train``'s).
        resume: append to the files there, skipping rows they already hold;
            otherwise start them over.
        tensorboard: also write TensorBoard event files (needs ``tensorboard``).

    Example:
        >>> import tempfile
        >>> with RunLog(tempfile.mkdtemp()) as log:
        ...     log("flow", 1, 10, {"nll": 1.5, "prototype": 0.1, "loss": 1.6, "lr": 3e-4})
        ...     log("flow", 1, 10, {"nll": 1.5, "prototype": 0.1, "loss": 1.6, "lr": 3e-4})
        ...     (log.folder / "flow.csv").read_text().splitlines()
        ['seed,split,iteration,nll,prototype,loss,lr', '0,test,1,1.5,0.1,1.6,0.0003']
    """

    def __init__(
        self,
        folder: str | Path,
        *,
        seed: int = 0,
        resume: bool = False,
        tensorboard: bool = False,
    ) -> None:
        self.folder = Path(folder)
        self.seed = seed
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise _write_error(self.folder, error) from error
        self._files = {
            name: _CSVFile(self.folder / file, columns, resume)
            for name, (file, columns) in LOG_FILES.items()
        }
        # What the files hold already: the last iteration (batch) per seed, split (and stage).
        self._last_flow = _last_done(self._files["flow"].rows, ("seed", "split"), "iteration")
        self._last_mining = _last_done(
            self._files["mining"].rows, ("seed", "split", "stage"), "done"
        )
        self._evaluated = {_evaluation_key(row) for row in self._files["evaluations"].rows}
        for file in self._files.values():
            file.rows = []  # only needed for the keys above
        self._writer = _summary_writer(self.folder / "tensorboard") if tensorboard else None

    def __call__(self, stage: str, done: int, total: int, losses: dict[str, float]) -> None:
        """Log one progress report (a :data:`~gsmflow_nflows.training.trainer.ProgressFn`)."""
        seed, split, kind = parse_stage(stage)
        seed = self.seed if seed is None else seed
        if kind == "flow":
            if done <= self._last_flow.get((seed, split), 0):
                return
            self._last_flow[(seed, split)] = done
            row = {"seed": seed, "split": split, "iteration": done}
            row.update({name: losses.get(name, "") for name in FLOW_COLUMNS[3:]})
            self._files["flow"].write(row)
            if self._writer is not None and (done % TENSORBOARD_EVERY == 0 or done == total):
                tag = f"seed{seed}/{split}/flow"
                for name in FLOW_COLUMNS[3:]:
                    if name in losses:
                        self._writer.add_scalar(f"{tag}/{name}", losses[name], done)
        elif kind in ("relation", "mining"):
            stage_key = (seed, split, kind)
            if done <= self._last_mining.get(stage_key, 0):
                return
            self._last_mining[stage_key] = done
            self._files["mining"].write(
                {"seed": seed, "split": split, "stage": kind, "done": done, "total": total}
            )

    def evaluation(self, seed: int, split: str, record: dict[str, Any]) -> None:
        """Log one evaluation record (an ``on_evaluation`` callback of the protocols)."""
        rows = evaluation_rows(seed, split, record)
        fresh = [row for row in rows if _evaluation_key(row) not in self._evaluated]
        for row in fresh:
            self._evaluated.add(_evaluation_key(row))
            self._files["evaluations"].write(row)
        if self._writer is not None and fresh and rows:
            last = rows[-1]
            group = "eval_calibrated" if last["calibration"] else "eval"
            for name in ("S", "U", "H", "T1"):
                if last[name] != "":
                    self._writer.add_scalar(
                        f"seed{seed}/{split}/{group}/{name}", last[name], record["iteration"]
                    )

    def close(self) -> None:
        """Close the files (and flush the TensorBoard writer)."""
        for file in self._files.values():
            file.close()
        if self._writer is not None:
            self._writer.close()

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _last_done(
    rows: list[dict[str, Any]], keys: tuple[str, ...], done: str
) -> dict[tuple[Any, ...], int]:
    """The largest ``done`` value of the ``rows`` of each combination of ``keys``."""
    last: dict[tuple[Any, ...], int] = {}
    for row in rows:
        key = tuple(row[name] for name in keys)
        last[key] = max(last.get(key, 0), row[done])
    return last


def _summary_writer(folder: Path) -> Any:
    """A TensorBoard ``SummaryWriter`` into ``folder``, or one error naming the extra."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError(
            f"TensorBoard files need the tensorboard package: {TENSORBOARD_EXTRA}."
        ) from None
    return SummaryWriter(log_dir=os.fspath(folder), flush_secs=10)


@dataclass(frozen=True)
class RunLogTables:
    """The rows of a run log's three files, typed (integers, floats, ``None`` for empty cells)."""

    flow: list[dict[str, Any]]
    evaluations: list[dict[str, Any]]
    mining: list[dict[str, Any]]


def read_run_log(folder: str | Path) -> RunLogTables:
    """Read the CSV files a :class:`RunLog` wrote into ``folder``.

    Raises:
        ConfigError: ``folder`` holds no run log, or a file with other columns.

    Example:
        >>> tables = read_run_log("runs/digits")  # doctest: +SKIP
        >>> tables.flow[0]["nll"]  # doctest: +SKIP
    """
    folder = Path(folder)
    paths = {name: folder / file for name, (file, _) in LOG_FILES.items()}
    if not any(path.is_file() for path in paths.values()):
        raise ConfigError(
            f"{folder} holds no run log ({', '.join(file for file, _ in LOG_FILES.values())}); "
            "name the folder a run logged into."
        )
    tables = {}
    for name, (_, columns) in LOG_FILES.items():
        path = paths[name]
        tables[name] = _read_rows(path, columns, repair=False) if path.is_file() else []
    return RunLogTables(**tables)
