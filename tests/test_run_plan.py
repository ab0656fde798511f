"""The bench plan: counts by hand and against a run; timing it changes nothing."""

import dataclasses
import math

import pytest
import torch

from gsmflow_nflows.experiment import BenchRequest, request_config, run_bench
from gsmflow_nflows.run_plan import UnitCosts, measure_costs, plan_bench
from tests.tiny_gzsl import load_tiny, make_tiny, tiny_config


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_tiny(tmp_path_factory.mktemp("plan-data"))


def request_for(root, protocol, **fields):
    return BenchRequest(
        "TINY",
        data_root=str(root),
        protocol=protocol,
        config=tiny_config().to_dict(),
        device="cpu",
        **fields,
    )


def plan_for(root, request, costs=None):
    data = load_tiny(root)
    val = load_tiny(root, split="val") if request.protocol == "val" or request.calibrate else None
    return plan_bench(request, data, request_config(request, data), val_data=val, costs=costs)


def test_counts_by_hand(root):
    # tiny: 4 seen x 10 training images, 2 unseen classes, 16-d; tiny_config: batch 10,
    # 5 epochs, evaluations every 5 iterations from 5, 20 generated per class,
    # classifier batch 64 and 3 epochs, no step floor; mining 1 relation epoch, 2 loops.
    plan = plan_for(root, request_for(root, "paper", seeds=(0, 1), baselines=False))
    (training,) = plan.trainings
    assert training.iterations == 40 // 10 * 5 == 20
    assert training.evaluations == 4  # iterations 5, 10, 15, 20
    assert (training.relation_steps, training.mining_steps) == (1 * 4, 2 * 4)
    evaluation = training.evaluation
    assert evaluation.generated == 2 * 20
    assert evaluation.generated_bytes == 40 * 16 * 4
    assert evaluation.gzsl_steps == math.ceil(80 / 64) * 3  # 40 real + 40 generated rows
    assert evaluation.zsl_steps == 1 * 3  # 40 rows, one batch
    assert plan.baseline_steps == 0
    costs = UnitCosts(flow_iteration=1.0, relation_step=0.5, generated_feature=1e-3,
                      classifier_step=1e-2)  # fmt: skip
    timed = plan_for(root, request_for(root, "paper", seeds=(0, 1), baselines=False), costs)
    per_seed = 20 * 1.0 + 12 * 0.5 + 4 * (40 * 1e-3 + 9 * 1e-2)
    assert timed.seconds_per_seed() == pytest.approx(per_seed)
    assert timed.seconds() == pytest.approx(2 * per_seed)
    assert "about" in timed.estimate() and plan.estimate() == "not timed"


def test_baselines_and_calibration_add_their_work(root):
    plain = plan_for(root, request_for(root, "final"))
    # linear-Gaussian: the same two classifiers as an evaluation; seen-only: 40 rows, 3 epochs
    assert plain.baseline_steps == 6 + 3 + 3
    calibrated = plan_for(root, request_for(root, "final", calibrate=True))
    test, val = calibrated.trainings
    assert test.evaluations == 2 and (val.split, val.evaluations) == ("val", 1)
    assert val.train_rows == load_tiny(root, split="val").num_train
    assert calibrated.baseline_steps > plain.baseline_steps


@pytest.mark.parametrize("protocol", ["paper", "val"])
def test_plan_matches_the_run(root, protocol):
    request = request_for(root, protocol, baselines=False)
    plan = plan_for(root, request)
    (run,) = run_bench(request).runs
    if protocol == "paper":
        (training,) = plan.trainings
        assert [r["iteration"] for r in run.evaluations] == [5, 10, 15, 20]
        assert training.evaluations == len(run.evaluations)
    else:
        val, test = plan.trainings
        assert val.evaluations == len(run.validation)
        assert val.iterations == run.validation[-1]["iteration"]
        assert test.iterations == 20 and test.evaluations == 1


def test_measuring_changes_nothing(root):
    request = request_for(root, "final")
    before = run_bench(request)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    data = load_tiny(root)
    costs = measure_costs(request_config(request, data), data, device="cpu", seconds=0.01)
    assert torch.equal(torch.get_rng_state(), state)
    assert min(costs.flow_iteration, costs.relation_step, costs.classifier_step) > 0
    assert costs.generated_feature > 0
    after = run_bench(request)
    for first, second in zip(before.runs, after.runs, strict=True):
        assert (first.S, first.U, first.H, first.T1) == (second.S, second.U, second.H, second.T1)
    assert scores(before.baselines["per_seed"]) == scores(after.baselines["per_seed"])


def scores(per_seed):
    """The baselines' numbers, without their wall times."""
    return [
        {name: {k: v for k, v in value.items() if k != "seconds"} if isinstance(value, dict)
         else value for name, value in run.items()}
        for run in per_seed
    ]  # fmt: skip


def test_the_plan_predicts_where_a_run_stops_stepping(root):
    # lr 1e-2 times 1e-3 every epoch of 4 iterations: frozen after 2 epochs (test_frozen.py)
    config = tiny_config(training={"lr": 1e-2, "lr_step_epochs": 1, "lr_gamma": 1e-3})
    request = BenchRequest("TINY", data_root=str(root), protocol="final",
                           config=config.to_dict(), device="cpu", baselines=False)  # fmt: skip
    data = load_tiny(root)
    costs = measure_costs(request_config(request, data), data, device="cpu", seconds=0.01)
    plan = plan_bench(request, data, request_config(request, data), costs=costs)
    (run,) = run_bench(request).runs
    assert run.frozen_at == plan.trainings[0].frozen_at == 8
    assert plan.trainings[0].steps == 8 and plan.trainings[0].iterations == 20
    assert "steps stop at about 8" in "\n".join(plan.lines())
    unfrozen = dataclasses.replace(costs, weights_rms=None)
    slower = plan_bench(request, data, request_config(request, data), costs=unfrozen)
    assert slower.seconds_per_seed() - plan.seconds_per_seed() == pytest.approx(
        12 * costs.flow_iteration
    )
