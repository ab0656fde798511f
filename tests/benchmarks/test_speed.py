"""Pieces of benchmarks/speed.py checked against independent computations.

The settings against the package's paper preset, the reported ratios and
table cells against hand-computed values, the two reference variants against
each other (they differ only in the optimizer), and the counters against a
known matmul and allocation.
"""

import pytest
import torch

pytest.importorskip("FrEIA")

from benchmarks.speed import parse_args  # noqa: E402
from benchmarks.speedlib.report import COLUMNS, add_ratios, format_table  # noqa: E402
from benchmarks.speedlib.rounds import VariantPool  # noqa: E402
from benchmarks.speedlib.settings import QUICK, apy_settings, resolve_settings  # noqa: E402
from benchmarks.speedlib.timing import flops_and_peak_memory, summarize  # noqa: E402
from benchmarks.speedlib.variants import Runner, Variant, build_variants, make_runner  # noqa: E402
from benchmarks.speedlib.workload import build_workload  # noqa: E402
from gsmflow_nflows.data import KNOWN_DATASETS  # noqa: E402
from gsmflow_nflows.training import preset_config  # noqa: E402
from tests.tiny_gzsl import load_tiny, make_tiny  # noqa: E402


def test_default_settings_are_apys_paper_preset(tmp_path):
    paper = preset_config("apy", load_tiny(make_tiny(tmp_path)), "paper")
    apy = KNOWN_DATASETS["apy"]
    settings = resolve_settings(parse_args([]))
    assert settings == apy_settings()
    expected = {
        "classes": apy.num_classes,
        "seen": apy.num_seen,
        "attributes": apy.attribute_dim,
        "train_size": apy.num_trainval,
        "batch": paper.training.batch_size,
        "blocks": paper.model.num_blocks,
        "hidden": paper.model.hidden_features,
        "semantic": paper.model.semantic_features,
        "clamp": paper.model.clamp,
        "samples_per_class": paper.evaluation.samples_per_class,
        "lr": paper.training.lr,
        "weight_decay": paper.training.weight_decay,
        "perturbation": paper.training.perturbation_pi,
        "prototype_weight": paper.training.prototype_weight,
    }
    assert {key: settings[key] for key in expected} == expected
    assert parse_args([]).seed == paper.seed


def test_quick_and_size_flags_override_sizes_not_hyperparameters():
    settings = resolve_settings(parse_args(["--quick", "--hidden", "7", "--train-size", "50"]))
    assert settings["hidden"] == 7 and settings["train_size"] == 50
    assert settings["blocks"] == QUICK["blocks"] and settings["features"] == QUICK["features"]
    assert settings["lr"] == apy_settings()["lr"]
    assert settings["prototype_weight"] == apy_settings()["prototype_weight"]


def _result(name, model, fused, median, flops=10**9, sampling=(10.0, 100)):
    return {
        "name": name,
        "model": model,
        "fused_adam": fused,
        "train_step": {"median_s": median, "iqr_s": median / 10},
        "train_step_flops": flops,
        "train_step_gflops": flops / median / 1e9,
        "sampling_s": sampling[0],
        "sampling_features": sampling[1],
        "sampling_features_per_s": sampling[1] / sampling[0],
        "sampling_gflops": 1.0,
        "train_step_peak_memory_bytes": 3 * 2**20,
    }


def _results():
    return [
        _result("reference (FrEIA)", "reference", False, 1.0, flops=4 * 10**9),
        _result("reference (FrEIA, fused Adam)", "reference", True, 0.8, flops=4 * 10**9),
        _result("ours-fp32", "ours", True, 0.5, flops=3 * 10**9, sampling=(4.0, 80)),
        _result("ours-fp32-plain-adam", "ours", False, 0.625, flops=3 * 10**9),
    ]


def test_ratios_over_the_authors_reference_and_the_same_adam():
    results = _results()
    add_ratios(results)
    by_name = {r["name"]: r for r in results}
    ours, plain = by_name["ours-fp32"], by_name["ours-fp32-plain-adam"]
    assert ours["train_step_speedup"] == pytest.approx(1.0 / 0.5)
    assert ours["train_step_speedup_same_adam"] == pytest.approx(0.8 / 0.5)
    assert plain["train_step_speedup"] == pytest.approx(1.0 / 0.625)
    assert plain["train_step_speedup_same_adam"] == pytest.approx(1.0 / 0.625)
    assert by_name["reference (FrEIA, fused Adam)"]["train_step_speedup"] == pytest.approx(1.25)
    # (80 features / 4 s) over (100 features / 10 s)
    assert ours["sampling_speedup"] == pytest.approx(2.0)
    # the reference's 4 GFLOP over our 0.5 s
    assert ours["train_step_model_gflops"] == pytest.approx(8.0)


def test_same_adam_ratio_is_missing_without_a_fused_reference():
    results = [r for r in _results() if r["name"] != "reference (FrEIA, fused Adam)"]
    add_ratios(results)
    assert results[1]["name"] == "ours-fp32"
    assert results[1]["train_step_speedup_same_adam"] is None
    assert results[2]["train_step_speedup_same_adam"] == pytest.approx(1.6)


def test_table_rows_hold_the_values_in_column_order():
    results = _results()
    add_ratios(results)
    report = {
        "machine": {"cpu_model": "cpu", "threads": 1, "torch": "x", "device": "cpu"},
        "matmul_peak_gflops": {"fp32": 12.0, "bf16": 24.0},
        "settings": {"matmul_size": 8, "quick": False},
        "our_step": "train_step",
        "agreement": {"ok": True, "nll_abs_diff": 0.0},
        "failures": [],
        "mapping_notes": [],
        "results": results,
        "targets": [],
        "wall_s": 1.0,
    }
    lines = format_table(report).splitlines()
    header = next(line for line in lines if line.startswith("| variant"))
    row = next(line for line in lines if line.startswith("| ours-fp32 |"))
    cells = dict(zip(COLUMNS, (c.strip() for c in row.strip("|").split("|")), strict=True))
    assert header.count("|") == row.count("|") == len(COLUMNS) + 1
    assert cells["step ms (median)"] == "500.0" and cells["IQR ms"] == "50.0"
    assert cells["step x"] == "2.00" and cells["step x same Adam"] == "1.60"
    assert cells["GFLOP/step"] == "3.00" and cells["GFLOP/s counted"] == "6"
    assert cells["GFLOP/s model"] == "8" and cells["% fp32 peak"] == "50"
    assert cells["samples/s"] == "20" and cells["sampling x"] == "2.00"
    assert cells["step peak MB"] == "3.0"


def test_the_reference_runs_with_both_adams_and_only_the_optimizer_differs():
    variants = build_variants(["fp32"], plain_adam=False, compile=False)
    references = [v for v in variants if v.kind == "reference"]
    assert [v.fused_adam for v in references] == [False, True]
    workload = build_workload(resolve_settings(parse_args(["--quick"])), 2, 0, torch.device("cpu"))
    plain, fused = (make_runner(v, workload, sample_batch=8) for v in references)
    assert plain.optimizer.defaults["fused"] is None  # torch's default Adam, as the authors'
    assert plain.optimizer.defaults["foreach"] is None
    assert fused.optimizer.defaults["fused"] is True
    for runner in (plain, fused):
        torch.manual_seed(5)  # the same perturbation noise
        runner.step(0)
    start = dict(workload.reference.named_parameters())
    moved = 0.0
    for (name, p), q in zip(plain.model.named_parameters(), fused.model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6)
        moved = max(moved, (p - start[name]).abs().max().item())
    assert moved > 1e-4  # Adam's first step moves weights by about lr = 3e-4


def test_summary_statistics():
    stats = summarize([5.0, 1.0, 4.0, 2.0, 3.0])
    assert (stats["median_s"], stats["q1_s"], stats["q3_s"]) == (3.0, 2.0, 4.0)
    assert (stats["iqr_s"], stats["min_s"], stats["n"]) == (2.0, 1.0, 5)


def test_flops_and_peak_memory_of_a_known_matmul_and_allocation():
    a, b = torch.randn(8, 16), torch.randn(16, 4)

    def work():
        scratch = torch.empty(2**18)  # 1 MiB, freed before the next allocation
        del scratch
        torch.empty(1000)
        return a @ b

    flops, memory = flops_and_peak_memory(work, torch.device("cpu"))
    assert flops == 2 * 8 * 16 * 4
    if memory["bytes"] is not None:  # the profiler's private event API may change
        assert memory["bytes"] == 2**20


def _pool(sequential, kinds=("reference", "ours", "ours")):
    pool = VariantPool(sequential, log=lambda message: None)
    for k, kind in enumerate(kinds):
        variant = Variant(f"v{k}", kind)
        pool.add(variant, lambda v=variant: Runner(v, torch.nn.Linear(1, 1), None, None, None))
    return pool


def test_rounds_rotate_the_order_and_drop_a_failing_variant():
    pool, calls = _pool(sequential=False), []

    def body(runner, i):
        calls.append((i, runner.variant.name))
        if runner.variant.name == "v1" and i == 1:
            raise RuntimeError("boom")

    pool.rounds(3, body)
    assert calls == [
        (0, "v0"), (0, "v1"), (0, "v2"),
        (1, "v1"), (1, "v2"), (1, "v0"),  # v1 fails here and is dropped
        (2, "v0"), (2, "v2"),  # 2 % 2 == 0: no rotation of the two left
    ]  # fmt: skip
    assert [r.variant.name for r in pool.runners] == ["v0", "v2"]
    assert pool.failures == [{"name": "v1", "error": "RuntimeError: boom"}]


def test_sequential_rounds_and_a_failing_reference_raises():
    pool, calls = _pool(sequential=True), []
    pool.rounds(2, lambda runner, i: calls.append((runner.variant.name, i)))
    assert calls == [("v0", 0), ("v0", 1), ("v1", 0), ("v1", 1), ("v2", 0), ("v2", 1)]

    def fail(runner, i):
        raise ValueError("reference broke")

    with pytest.raises(ValueError, match="reference broke"):
        pool.rounds(1, fail)
