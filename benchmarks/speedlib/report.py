"""Reporting: ratios to the reference, the issue's targets, the machine, the table, the JSON."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from typing import IO, Any

import torch

#: The issue's targets: (description, result name, key, minimum).
TARGETS = (
    ("training step fp32 >= 1.5x reference", "ours-fp32", "train_step_speedup", 1.5),
    ("training step bf16 >= 3x reference", "ours-bf16", "train_step_speedup", 3.0),
    ("sampling fp32 >= 1.5x reference", "ours-fp32", "sampling_speedup", 1.5),
    ("sampling bf16 >= 3x reference", "ours-bf16", "sampling_speedup", 3.0),
    ("fp32 step >= 70% of fp32 matmul peak", "ours-fp32", "train_step_peak_fraction", 0.7),
)

#: The table's columns, in order.
COLUMNS = (
    "variant",
    "step ms (median)",
    "IQR ms",
    "step x",
    "step x same Adam",
    "GFLOP/step",
    "GFLOP/s counted",
    "GFLOP/s model",
    "% fp32 peak",
    "samples/s",
    "sampling x",
    "sampling GFLOP/s",
    "step peak MB",
)


def machine_description(device: torch.device) -> dict[str, Any]:
    """Platform, versions, threads, CPU model (``lscpu``), GPU and the 1-minute load average."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "device": str(device),
    }
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in lscpu.splitlines():
            if line.startswith("Model name:"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        info["cpu_model"] = platform.processor() or "unknown"
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    try:
        info["load_average_1m"] = os.getloadavg()[0]
    except OSError:
        pass
    return info


def add_ratios(results: list[dict[str, Any]]) -> None:
    """Each result's speed-ups over the reference, and the model's GFLOP/s.

    ``train_step_speedup`` and ``sampling_speedup`` are over the reference with
    the authors' plain Adam; ``train_step_speedup_same_adam`` is over the
    reference with the same Adam as the variant (fused or plain), so it leaves
    the optimizer out (``None`` when that reference is missing).
    """
    references = {r["fused_adam"]: r for r in results if r["model"] == "reference"}
    reference = references[False]
    for r in results:
        median = r["train_step"]["median_s"]
        r["train_step_speedup"] = reference["train_step"]["median_s"] / median
        same_adam = references.get(r["fused_adam"])
        r["train_step_speedup_same_adam"] = (
            None if same_adam is None else same_adam["train_step"]["median_s"] / median
        )
        r["sampling_speedup"] = (
            reference["sampling_s"]
            / r["sampling_s"]
            * (r["sampling_features"] / reference["sampling_features"])
        )
        # The model's FLOPs as the reference counts them, over our time: a figure
        # that does not shrink when we skip work the reference does.
        r["train_step_model_gflops"] = reference["train_step_flops"] / median / 1e9


def check_targets(results: list[dict[str, Any]], peak_fp32: float) -> list[dict[str, Any]]:
    """Each result's fraction of the fp32 matmul peak, and every target's value and verdict."""
    by_name = {r["name"]: r for r in results}
    for r in results:
        r["train_step_peak_fraction"] = r["train_step_gflops"] / peak_fp32
    checks = []
    for description, name, key, minimum in TARGETS:
        value = by_name[name][key] if name in by_name else None
        checks.append(
            {
                "target": description,
                "value": value,
                "minimum": minimum,
                "met": None if value is None else value >= minimum,
            }
        )
    return checks


def _mb(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:.1f}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _summary_lines(report: dict[str, Any]) -> list[str]:
    """Machine, matmul peaks, our step, agreement, failures and weight-mapping notes."""
    machine, peaks, agreement = report["machine"], report["matmul_peak_gflops"], report["agreement"]
    lines = [
        f"machine: {machine.get('cpu_model', '?')}, {machine['threads']} threads, "
        f"torch {machine['torch']}, device {machine['device']}",
        f"matmul peak ({report['settings']['matmul_size']}^2): fp32 {peaks['fp32']:.0f} GFLOP/s, "
        f"bf16 {peaks['bf16']:.0f} GFLOP/s",
        f"our step: {report['our_step']}",
        "agreement (mapped weights, fp32): "
        + ("OK" if agreement["ok"] else "MISMATCH")
        + ", "
        + ", ".join(f"{k} {v:.3g}" for k, v in agreement.items() if k != "ok"),
    ]
    lines += [f"FAILED {failure['name']}: {failure['error']}" for failure in report["failures"]]
    lines += [f"weight mapping: {note}" for note in report["mapping_notes"]]
    return lines


def _result_row(r: dict[str, Any], peak_fp32: float) -> str:
    """One variant's row of the table, in the order of :data:`COLUMNS`."""
    step = r["train_step"]
    cells = [
        r["name"],
        f"{1e3 * step['median_s']:.1f}",
        f"{1e3 * step['iqr_s']:.1f}",
        f"{r['train_step_speedup']:.2f}",
        _ratio(r.get("train_step_speedup_same_adam")),
        f"{r['train_step_flops'] / 1e9:.2f}",
        f"{r['train_step_gflops']:.0f}",
        f"{r['train_step_model_gflops']:.0f}",
        f"{100 * r['train_step_gflops'] / peak_fp32:.0f}",
        f"{r['sampling_features_per_s']:.0f}",
        f"{r['sampling_speedup']:.2f}",
        f"{r['sampling_gflops']:.0f}",
        _mb(r["train_step_peak_memory_bytes"]),
    ]
    return "| " + " | ".join(cells) + " |"


def _target_lines(report: dict[str, Any]) -> list[str]:
    lines = []
    if report["settings"]["quick"]:
        lines.append("(--quick sizes: the targets below are meaningless at this size)")
    for check in report["targets"]:
        verdict = {True: "met", False: "NOT met", None: "not measured"}[check["met"]]
        value = "-" if check["value"] is None else f"{check['value']:.2f}"
        lines.append(f"target: {check['target']}: {value} ({verdict})")
    return lines


def format_table(report: dict[str, Any]) -> str:
    """The human-readable report: summary lines, the Markdown table, the targets, wall time."""
    peak_fp32 = report["matmul_peak_gflops"]["fp32"]
    lines = _summary_lines(report)
    lines += ["", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += [_result_row(r, peak_fp32) for r in report["results"]]
    lines += [""] + _target_lines(report)
    lines.append(f"wall time: {report['wall_s']:.0f} s")
    return "\n".join(lines)


def emit(report: dict[str, Any], json_path: str | None) -> None:
    """Print the table and any profiles (stderr when the JSON goes to stdout), then the JSON.

    ``json_path``: ``None`` for no JSON, ``"-"`` for stdout, else a file path.
    """
    out: IO[str] = sys.stderr if json_path == "-" else sys.stdout
    print(format_table(report), file=out)
    for r in report["results"]:
        if "train_step_profile" in r:
            print(
                f"\n{r['name']}: top ops of one training step\n{r['train_step_profile']}", file=out
            )
    if json_path is None:
        return
    text = json.dumps(report, indent=2, default=str)
    if json_path == "-":
        print(text)
    else:
        with open(json_path, "w") as f:
            f.write(text + "\n")
