"""The bench's result as a plain-text table: GSMFlow's row, the baselines', a verdict."""

from __future__ import annotations

import math
from typing import Any

from gsmflow_nflows.evaluation.baselines import CALIBRATED_BASELINE
from gsmflow_nflows.experiment import METRICS, BenchResult

__all__ = ["BASELINE_NAMES", "format_table"]

#: How :func:`format_table` names each baseline of
#: :func:`gsmflow_nflows.evaluation.run_baselines`.
BASELINE_NAMES = {
    "eszsl": "ESZSL (gamma=lambda=1)",
    "linear_gaussian": "linear-Gaussian + softmax",
    "seen_only": "seen-only softmax",
    "chance": "chance",
}
#: The row of the calibrated linear-Gaussian baseline (with calibrated stacking only).
CALIBRATED_BASELINE_NAME = "lin.-Gauss. + calibrated"


def format_table(result: BenchResult) -> str:
    """A plain-text table of a bench result (accuracies in %).

    One row for GSMFlow, then one per baseline (when the result has them), and a
    line comparing GSMFlow's mean H with the best of ESZSL and linear-Gaussian.
    """
    header = f"{'dataset':<12}{'protocol':<10}{'seeds':>6}"
    header += "".join(f"{m:>16}" for m in METRICS) + f"{'wall time':>12}"
    row = f"{result.dataset:<12}{result.protocol:<10}{len(result.seeds):>6}"
    row += _cells(result.mean, result.std, result.seconds)
    lines = [header, row]
    calibrated = result.calibrated
    if calibrated is not None:
        label = f"+ calibrated, gamma {calibrated['mean']['offset']:.2f}"
        gap = max(28 - len(label) - len(str(len(result.seeds))), 1)
        cells = _cells(calibrated["mean"], calibrated["std"], float("nan"))
        lines.append(f"{label}{' ' * gap}{len(result.seeds)}{cells}")
    baselines = result.baselines
    if baselines is not None:
        seeds = len(baselines["per_seed"])
        names = {**BASELINE_NAMES, CALIBRATED_BASELINE: CALIBRATED_BASELINE_NAME}
        for name, label in names.items():
            if name not in baselines["mean"]:  # the calibrated one runs with calibration only
                continue
            seconds = sum(entry[name]["seconds"] for entry in baselines["per_seed"])
            cells = _cells(baselines["mean"][name], baselines["std"][name], seconds)
            # the name fills the dataset and protocol columns; the seed count stays right-aligned
            gap = max(28 - len(label) - len(str(seeds)), 1)
            lines.append(f"{label}{' ' * gap}{seeds}{cells}")
    lines += [
        "",
        f"data: {result.data}; class vectors {result.semantic}; "
        f"preset {result.preset}, precision {result.precision}, "
        f"device {result.device}"
        + (f", ablated: {', '.join(result.ablate)}" if result.ablate else ""),
    ]
    if baselines is not None:
        lines.append(_verdict(result.mean["H"], baselines["mean"]))
    if calibrated is not None:
        lines.append(_calibrated_note(calibrated, baselines))
    if result.protocol == "paper":
        lines.append("protocol 'paper' picks the best epoch ON THE TEST SET, as the authors did.")
    return "\n".join(lines)


def _cells(mean: dict[str, float], std: dict[str, float], seconds: float) -> str:
    cells = "".join(f"{f'{100 * mean[m]:.1f} ± {100 * std[m]:.1f}':>16}" for m in METRICS)
    return cells + f"{_duration(seconds):>12}"


def _verdict(gsmflow_h: float, baseline_means: dict[str, dict[str, float]]) -> str:
    """``GSMFlow H 61.2 vs best baseline 55.0 (ESZSL): +6.2; GSMFlow beats ESZSL (55.0), ...``."""
    rivals = {
        "ESZSL": baseline_means["eszsl"]["H"],
        "linear-Gaussian": baseline_means["linear_gaussian"]["H"],
    }
    best_name = max(rivals, key=rivals.__getitem__)
    ours, best = round(100 * gsmflow_h, 1), round(100 * rivals[best_name], 1)

    def outcome(h: float) -> str:
        return "beats" if gsmflow_h > h else "ties with" if gsmflow_h == h else "loses to"

    each = ", ".join(f"{outcome(h)} {name} ({100 * h:.1f})" for name, h in rivals.items())
    return (
        f"GSMFlow H {ours:.1f} vs best baseline {best:.1f} ({best_name}): "
        f"{ours - best:+.1f}; GSMFlow {each}"
    )


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "-"
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes}m{rest:02d}s" if minutes else f"{rest}s"


def _calibrated_note(
    calibrated: dict[str, dict[str, float]], baselines: dict[str, Any] | None
) -> str:
    """How the calibrated row was chosen, and how it compares with the calibrated baseline."""
    note = (
        "calibrated stacking (Chao et al. 2016): the seen-score offset gamma chosen on the "
        "validation split"
    )
    rival = None if baselines is None else baselines["mean"].get(CALIBRATED_BASELINE)
    if rival is None:
        return note + "; the baselines are not calibrated."
    ours, theirs = round(100 * calibrated["mean"]["H"], 1), round(100 * rival["H"], 1)
    return (
        note + ", for GSMFlow and the linear-Gaussian baseline alike; calibrated GSMFlow H "
        f"{ours:.1f} vs calibrated linear-Gaussian {theirs:.1f}: {ours - theirs:+.1f}"
    )
