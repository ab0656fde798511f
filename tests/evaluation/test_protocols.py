"""Evaluation protocols: what each one reports, checked against its own records."""

import pytest
import torch

from gsmflow_nflows.data import GZSLData
from gsmflow_nflows.evaluation import protocols
from gsmflow_nflows.evaluation.protocols import evaluation_points, run_protocol
from gsmflow_nflows.training import GSMFlowTrainer
from tests.tiny_gzsl import load_tiny, make_tiny, tiny_config


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    return make_tiny(tmp_path_factory.mktemp("protocol-data"))


def _loader(root):
    cache = {}

    def load(split):
        if split not in cache:
            cache[split] = load_tiny(root, split=split)
        return cache[split]

    return load


# 20 iterations; evaluations every 6 from 6, and at the end: 6, 12, 18, 20.
CONFIG = tiny_config(seed=3, evaluation={"eval_every": 6, "eval_start": 6})


def test_paper_reports_the_best_h_and_t1_over_all_evaluations_and_epochs(tiny_root):
    result = run_protocol("paper", CONFIG, _loader(tiny_root), device="cpu")
    records = result.evaluations
    assert [r["iteration"] for r in records] == [6, 12, 18, 20]
    assert all(len(r["gzsl"]) == len(r["zsl_t1"]) == 3 for r in records)
    pairs = [(r["iteration"], e, s) for r in records for e, s in enumerate(r["gzsl"])]
    best_h = max(s["H"] for _, _, s in pairs)
    first = next((it, e, s) for it, e, s in pairs if s["H"] == best_h)  # first wins ties
    assert result.H == best_h
    assert (result.S, result.U) == (first[2]["S"], first[2]["U"])
    assert (result.iteration, result.classifier_epoch) == (first[0], first[1] + 1)
    t1 = [(r["iteration"], e, v) for r in records for e, v in enumerate(r["zsl_t1"])]
    best_t1 = max(v for _, _, v in t1)
    first_t1 = next((it, e) for it, e, v in t1 if v == best_t1)
    assert result.T1 == best_t1
    assert (result.t1_iteration, result.t1_epoch) == (first_t1[0], first_t1[1] + 1)
    for _, _, s in pairs:  # H is the harmonic mean of S and U
        expected = 0.0 if s["S"] + s["U"] == 0 else 2 * s["S"] * s["U"] / (s["S"] + s["U"])
        assert s["H"] == pytest.approx(expected)
    assert result.protocol == "paper" and result.seed == 3


def test_final_reports_the_last_epoch_of_one_evaluation_of_the_final_model(tiny_root):
    load = _loader(tiny_root)
    result = run_protocol("final", CONFIG, load, device="cpu")
    [record] = result.evaluations
    assert record["iteration"] == 20 == result.iteration
    last = record["gzsl"][-1]
    assert (result.S, result.U, result.H) == (last["S"], last["U"], last["H"])
    assert result.T1 == record["zsl_t1"][-1]
    assert result.classifier_epoch == result.t1_epoch == 3 and result.t1_iteration == 20
    assert len(record["gzsl"]) == len(record["zsl_t1"]) == 1  # only the last epoch is scored
    # the evaluation is that of the fully trained flow
    flow = GSMFlowTrainer(CONFIG, load("test"), device="cpu").fit()
    assert protocols.evaluate_flow(flow, load("test"), CONFIG, 20, last_epoch_only=True) == record
    # scoring only the last epoch changes nothing of it: same as the last of all epochs
    every = protocols.evaluate_flow(flow, load("test"), CONFIG, 20)
    assert len(every["gzsl"]) == 3
    # the same scores (the last-epoch-only record also holds each class's accuracy)
    assert every["gzsl"][-1] == {k: record["gzsl"][0][k] for k in ("S", "U", "H")}
    assert every["zsl_t1"][-1] == record["zsl_t1"][0]


def test_val_chooses_on_validation_and_reports_one_test_evaluation(tiny_root):
    load = _loader(tiny_root)
    result = run_protocol("val", CONFIG, load, device="cpu")
    tests, val_records = result.evaluations, result.validation
    # validation: 36 train_loc images, batch 10: 3 * 5 = 15 iterations; points 6, 12, 15
    assert [r["iteration"] for r in val_records] == [6, 12, 15]
    pairs = [(r["iteration"], e, s["H"]) for r in val_records for e, s in enumerate(r["gzsl"])]
    best = max(h for _, _, h in pairs)
    chosen_iteration, chosen_epoch, _ = next(p for p in pairs if p[2] == best)
    # the test flow trains to the same fraction of its 20 iterations
    assert result.iteration == max(1, round(chosen_iteration / 15 * 20))
    assert tests[0]["iteration"] == result.iteration
    assert len(tests[0]["gzsl"]) == chosen_epoch + 1 == result.classifier_epoch
    last = tests[0]["gzsl"][-1]
    assert (result.S, result.U, result.H) == (last["S"], last["U"], last["H"])
    assert 1 <= len(tests) <= 2
    # the validation data are the val split's: one "unseen" (validation) class
    assert load("val").num_unseen == 1 and load("test").num_unseen == 2


def _fake_record(split, iteration, epochs):
    """Scores that depend on (split, iteration, epoch) and whose epoch prefix is stable."""
    gzsl, t1 = [], []
    for epoch in range(epochs):
        h = {6: 0.2, 12: 0.5, 15: 0.3}.get(iteration, 0.1) + 0.01 * epoch  # best: last epoch
        if split == "test":
            h = 0.05 * epoch + iteration / 1000
        gzsl.append({"S": h, "U": h, "H": h})
        # T1 peaks at epoch 0 of iteration 12 on validation; on test it varies by epoch
        t1.append((0.9 if iteration == 12 and epoch == 0 else 0.1) if split == "val"
                  else 0.3 + 0.1 * epoch)  # fmt: skip
    return {"iteration": iteration, "gzsl": gzsl, "zsl_t1": t1}


def test_val_reports_t1_at_its_own_chosen_epoch(tiny_root, monkeypatch):
    """T1 chosen at the same iteration as H but an earlier classifier epoch."""

    def fake(flow, data: GZSLData, config, iteration, *, epochs=None, per_class=None, **_):
        return _fake_record(data.split, iteration, epochs or config.evaluation.classifier_epochs)

    monkeypatch.setattr(protocols, "evaluate_flow", fake)
    result = run_protocol("val", CONFIG, _loader(tiny_root), device="cpu")
    # H: validation best at iteration 12, epoch 3 -> test iteration round(12/15*20) = 16.
    assert (result.iteration, result.classifier_epoch) == (16, 3)
    assert result.H == pytest.approx(0.05 * 2 + 16 / 1000)
    # T1: validation best at iteration 12, epoch 1 -> the test T1 after 1 classifier epoch.
    assert (result.t1_iteration, result.t1_epoch) == (16, 1)
    assert result.T1 == pytest.approx(0.3)


def test_evaluation_points_follow_the_reference_schedule():
    due = evaluation_points(tiny_config(evaluation={"eval_every": 4, "eval_start": 8}), 22)
    assert [i for i in range(1, 23) if due(i)] == [8, 12, 16, 20, 22]


def test_unknown_protocol_is_a_value_error(tiny_root):
    with pytest.raises(ValueError, match="Unknown protocol 'best'"):
        run_protocol("best", CONFIG, _loader(tiny_root), device="cpu")


def _easy_data(seed=1, seen=12, unseen=3, dim=8, attributes=3, per_class=20, noise=0.15):
    """Class means linear in the attributes, unseen classes between seen ones."""
    g = torch.Generator().manual_seed(seed)
    att = torch.rand(seen + unseen, attributes, generator=g)
    att[seen:] = (att[:unseen] + att[unseen : 2 * unseen]) / 2
    means = att @ (3 * torch.randn(attributes, dim, generator=g))

    def draw(classes, count):
        labels = classes.repeat_interleave(count)
        return means[labels] + noise * torch.randn(len(labels), dim, generator=g), labels

    seen_ids, unseen_ids = torch.arange(seen), torch.arange(seen, seen + unseen)
    train, train_labels = draw(seen_ids, per_class)
    test_seen, test_seen_labels = draw(seen_ids, 10)
    test_unseen, test_unseen_labels = draw(unseen_ids, 10)
    return GZSLData(
        name="EASY",
        train_features=train,
        train_labels=train_labels,
        test_seen_features=test_seen,
        test_seen_labels=test_seen_labels,
        test_unseen_features=test_unseen,
        test_unseen_labels=test_unseen_labels - seen,
        seen_classes=seen_ids,
        unseen_classes=unseen_ids,
        seen_embeddings=att[:seen].contiguous(),
        unseen_embeddings=att[seen:].contiguous(),
        class_names=tuple(str(c) for c in range(seen + unseen)),
    )


def test_short_run_on_easy_data_beats_chance():
    """End to end: generated unseen features let the classifier beat 1/(S+U) on H."""
    data = _easy_data()
    config = tiny_config(
        seed=0,
        model={"hidden_features": 32, "semantic_features": 16},
        training={"epochs": 10, "lr": 1e-2, "batch_size": 20, "prototype_weight": 10.0,
                  "lr_step_epochs": 100},  # 120 iterations at a constant learning rate
        mining={"enabled": False},
        evaluation={"classifier_epochs": 10, "samples_per_class": 20, "classifier_lr": 1e-2,
                    "classifier_batch_size": 32},
    )  # fmt: skip
    result = run_protocol("final", config, lambda split: data, device="cpu")
    chance = 1 / (data.num_seen + data.num_unseen)
    assert result.S > 2 * chance and result.U > 2 * chance
    assert result.H > 2 * chance
