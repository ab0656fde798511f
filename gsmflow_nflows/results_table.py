"""Markdown accuracy tables of bench results (`benchmarks/accuracy.py`, `gsmflow table`).

Each row is one :func:`gsmflow_nflows.experiment.run_bench` result (a dataset, preset,
protocol and ablation over its seeds), with the baselines' H on the same seeds beside.
"""

from __future__ import annotations

from typing import Any


def _baseline_h(baselines: dict[str, Any] | None, name: str) -> str:
    if baselines is None:  # run with --no-baselines
        return "-"
    means = baselines["mean"] if "mean" in baselines else baselines  # older files: no per-seed
    return f"{100 * means[name]['H']:.1f}" if name in means else "-"


def markdown(results: list[dict[str, Any]]) -> str:
    """One row per (dataset, preset, protocol, ablation), baselines' H on the same seeds beside.

    Example:
        >>> print(markdown([]))
        | dataset | data | preset | protocol | precision | ablated | seeds | S | U | H | T1 | \
ESZSL H | lin.-Gauss. H | seen-only H | wall time |
        |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|
    """
    lines = [
        "| dataset | data | preset | protocol | precision | ablated | seeds | S | U | H | T1 | "
        "ESZSL H | lin.-Gauss. H | seen-only H | wall time |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        cells = [
            f"{100 * result['mean'][m]:.1f} ± {100 * result['std'][m]:.1f}"
            for m in ("S", "U", "H", "T1")
        ]
        name = result["dataset"].lower()
        # `synthetic` is generated; `digits` is real; other folders are whatever the user put there.
        data = {"synthetic": "generated", "digits": "real"}.get(name, "xlsa17 folder")
        baselines = result.get("baselines")
        rivals = [_baseline_h(baselines, k) for k in ("eszsl", "linear_gaussian", "seen_only")]
        lines.append(
            f"| {result['dataset']} | {data} | {result['preset']} | {result['protocol']} | "
            f"{result['precision']} | "
            f"{','.join(result['ablate']) or '-'} | {len(result['seeds'])} | "
            + " | ".join(cells + rivals)
            + f" | {result['seconds'] / 60:.1f} min |"
        )
    return "\n".join(lines)
