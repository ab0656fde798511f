"""The trainer: determinism, exact resume, checkpoint errors, mining data flow, LR schedule."""

import math

import pytest
import torch

from gsmflow_nflows.training import CheckpointError, GSMFlowTrainer
from gsmflow_nflows.training import trainer as trainer_module
from tests.tiny_gzsl import tiny_config


def _state(flow):
    return {name: value.detach().clone() for name, value in flow.state_dict().items()}


def _assert_same_state(a, b):
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def _evaluator(data):
    """An evaluation callback whose record depends on every flow parameter."""
    x, a = data.test_seen_features[:6], data.seen_embeddings[data.test_seen_labels[:6]]

    def evaluate(iteration, flow):
        with torch.no_grad():
            return {"iteration": iteration, "log_prob": flow.log_prob(x, context=a).tolist()}

    return evaluate


def _fit(config, data, **fit_options):
    """Fit a fresh trainer; returns (state, history, losses seen by the progress callback)."""
    trainer = GSMFlowTrainer(config, data, device="cpu", **fit_options.pop("trainer", {}))
    losses = []
    flow = trainer.fit(
        progress=lambda stage, done, total, values: losses.append((stage, done, values)),
        progress_every=1,
        evaluate=_evaluator(data),
        evaluate_at=lambda iteration: iteration % 3 == 0,
        **fit_options,
    )
    return _state(flow), list(trainer.history), losses


def test_same_seed_same_parameters_and_history(tiny_data):
    config = tiny_config(seed=4)
    first, history, losses = _fit(config, tiny_data)
    torch.manual_seed(123)  # the global RNG must not matter
    second, history_b, losses_b = _fit(config, tiny_data)
    _assert_same_state(first, second)
    assert history == history_b and losses == losses_b
    assert [r["iteration"] for r in history] == [3, 6, 9, 12, 15, 18]


@pytest.mark.parametrize("mining", [True, False], ids=["mining", "no-mining"])
def test_fit_leaves_the_global_rng_alone(tiny_data, mining):
    config = tiny_config(seed=4, mining={"enabled": mining})
    torch.manual_seed(77)
    state = torch.get_rng_state()
    first, history, _ = _fit(config, tiny_data)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(78)  # another global state: the same run
    second, history_b, _ = _fit(config, tiny_data)
    _assert_same_state(first, second)
    assert history == history_b


def test_a_second_fit_without_resume_starts_fresh(tiny_data):
    config = tiny_config(seed=4)
    trainer = GSMFlowTrainer(config, tiny_data, device="cpu")
    options = dict(evaluate=_evaluator(tiny_data), evaluate_at=lambda i: i % 3 == 0)
    trainer.fit(**options)
    flow = trainer.fit(**options)  # again, without resume
    fresh, history, _ = _fit(config, tiny_data)
    assert trainer.history == history
    assert [r["iteration"] for r in trainer.history] == [3, 6, 9, 12, 15, 18]
    _assert_same_state(_state(flow), fresh)


def test_different_seeds_differ(tiny_data):
    first, history, _ = _fit(tiny_config(seed=0), tiny_data)
    second, history_b, _ = _fit(tiny_config(seed=1), tiny_data)
    assert any(not torch.equal(first[name], second[name]) for name in first)
    assert history != history_b


@pytest.mark.parametrize("mining", [True, False], ids=["mining", "no-mining"])
def test_resume_equals_uninterrupted_run(tiny_data, tmp_path, mining):
    config = tiny_config(seed=2, mining={"enabled": mining})
    path = tmp_path / "run.pt"
    # Stop mid-epoch (7 = 1 epoch of 4 + 3) and between checkpoints (every 5).
    options = {"trainer": {"checkpoint_path": path, "checkpoint_every": 5}}
    _, partial, _ = _fit(config, tiny_data, stop_after=7, **options)
    assert path.is_file() and [r["iteration"] for r in partial] == [3, 6]
    torch.manual_seed(999)  # a fresh process would have another global RNG state
    resumed, history, losses = _fit(config, tiny_data, resume=True, **options)
    uninterrupted, full_history, full_losses = _fit(config, tiny_data)
    _assert_same_state(resumed, uninterrupted)
    assert history == full_history
    assert losses == [entry for entry in full_losses if entry[1] > 7]  # continued from 8


def test_resume_without_checkpoint_file_starts_from_scratch(tiny_data, tmp_path):
    config = tiny_config(seed=2)
    options = {"trainer": {"checkpoint_path": tmp_path / "none-yet.pt"}}
    resumed, history, _ = _fit(config, tiny_data, resume=True, **options)
    fresh, history_b, _ = _fit(config, tiny_data)
    _assert_same_state(resumed, fresh)
    assert history == history_b


@pytest.fixture(scope="module")
def checkpoint_of_seed0(tiny_data, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "seed0.pt"
    GSMFlowTrainer(tiny_config(seed=0), tiny_data, device="cpu", checkpoint_path=path).fit(
        stop_after=2
    )
    return path


@pytest.mark.parametrize(
    "changes",
    [{"seed": 1}, {"training": {"lr": 2e-3}}, {"mining": {"loops": 3}}],
    ids=["seed", "lr", "mining"],
)
def test_checkpoint_of_another_config_is_refused(tiny_data, checkpoint_of_seed0, changes):
    seed = changes.pop("seed", 0)
    trainer = GSMFlowTrainer(
        tiny_config(seed=seed, **changes), tiny_data, device="cpu",
        checkpoint_path=checkpoint_of_seed0,
    )  # fmt: skip
    with pytest.raises(CheckpointError, match=r"seed0\.pt: made with a different config"):
        trainer.fit(resume=True)


def test_checkpoint_of_another_dataset_is_refused(tiny_root, checkpoint_of_seed0):
    from tests.tiny_gzsl import load_tiny

    other = load_tiny(tiny_root, split="val")  # other classes and size
    trainer = GSMFlowTrainer(
        tiny_config(seed=0), other, device="cpu", checkpoint_path=checkpoint_of_seed0
    )
    with pytest.raises(CheckpointError, match="different dataset"):
        trainer.fit(resume=True)


@pytest.mark.parametrize("kind", ["corrupt", "truncated", "foreign", "empty"])
def test_unusable_checkpoint_file_is_refused(tiny_data, checkpoint_of_seed0, tmp_path, kind):
    path = tmp_path / "bad.pt"
    if kind == "corrupt":
        path.write_bytes(b"\x80\x04 this is not a torch file" * 10)
    elif kind == "truncated":
        path.write_bytes(checkpoint_of_seed0.read_bytes()[:300])
    elif kind == "foreign":
        torch.save({"model": torch.zeros(3)}, path)
    else:
        path.write_bytes(b"")
    trainer = GSMFlowTrainer(tiny_config(), tiny_data, device="cpu", checkpoint_path=path)
    expected = "not a gsmflow checkpoint" if kind == "foreign" else "not a readable checkpoint"
    with pytest.raises(CheckpointError, match=f"bad.pt: {expected}"):
        trainer.fit(resume=True)
    assert issubclass(CheckpointError, ValueError)


def test_batch_larger_than_training_set_names_both_numbers(tiny_data):
    assert tiny_data.num_train == 40
    with pytest.raises(ValueError, match=r"batch_size 41 .*40 samples"):
        GSMFlowTrainer(tiny_config(training={"batch_size": 41}), tiny_data, device="cpu")
    with pytest.raises(ValueError, match=r"relation_batch_size 50 .*\(40\)"):
        GSMFlowTrainer(tiny_config(mining={"relation_batch_size": 50}), tiny_data, device="cpu")
    # With mining switched off its batch size does not matter.
    config = tiny_config(mining={"relation_batch_size": 50, "enabled": False})
    GSMFlowTrainer(config, tiny_data, device="cpu")


@pytest.mark.parametrize("mining", [True, False], ids=["mining", "no-mining"])
def test_mining_appends_one_sample_per_training_sample(tiny_data, monkeypatch, mining):
    rows, labels_seen = {}, {}
    original = trainer_module.train_step

    def spy(flow, optimizer, features, class_embeddings, **kwargs):
        for row, embedding in zip(features, class_embeddings, strict=True):
            key = tuple(row.tolist())
            rows[key] = rows.get(key, 0) + 1
            labels_seen[key] = tuple(embedding.tolist())
        return original(flow, optimizer, features, class_embeddings, **kwargs)

    monkeypatch.setattr(trainer_module, "train_step", spy)
    config = tiny_config(mining={"enabled": mining}, training={"epochs": 10})  # 40 iterations
    GSMFlowTrainer(config, tiny_data, device="cpu").fit()

    real = {tuple(row.tolist()) for row in tiny_data.train_features}
    embeddings = tiny_data.seen_embeddings[tiny_data.train_labels]
    real_classes = {tuple(r.tolist()): tuple(e.tolist()) for r, e in zip(
        tiny_data.train_features, embeddings, strict=True)}  # fmt: skip
    assert real <= set(rows)  # every real sample trained on, with its own class
    assert all(labels_seen[key] == real_classes[key] for key in real)
    extra = set(rows) - real
    # 400 rows drawn from 80 (40 real + 40 mined) or 40: whole passes over the set.
    assert len(extra) == (40 if mining else 0)
    assert sorted(rows.values()) == ([5] * 80 if mining else [10] * 40)
    if mining:  # the mined samples keep the labels of their sources: 10 per class
        counts = {}
        for key in extra:
            counts[labels_seen[key]] = counts.get(labels_seen[key], 0) + 1
        assert sorted(counts.values()) == [10, 10, 10, 10]


def test_learning_rate_steps_once_per_epoch_of_ceil_n_over_batch(tiny_data, tmp_path):
    # N = 40, batch 15: ceil(40/15) = 3 iterations per epoch, floor(40/15) * 12 = 24 in total.
    config = tiny_config(
        training={"batch_size": 15, "epochs": 12, "lr": 1e-2, "lr_step_epochs": 2,
                  "lr_gamma": 0.3},
        mining={"enabled": False},
    )  # fmt: skip
    trainer = GSMFlowTrainer(config, tiny_data, device="cpu", checkpoint_path=tmp_path / "c.pt")
    lrs = {}
    trainer.fit(
        progress=lambda stage, done, total, values: lrs.__setitem__(done, values["lr"]),
        progress_every=1,
    )
    assert trainer.total_iterations == 24
    for iteration, lr in lrs.items():  # the lr in force after the iteration's scheduler step
        assert lr == pytest.approx(1e-2 * 0.3 ** ((iteration // 3) // 2), rel=1e-12)
    state = torch.load(tmp_path / "c.pt", weights_only=False)
    final = state["optimizer"]["param_groups"][0]["lr"]
    assert final == pytest.approx(1e-2 * 0.3 ** (24 // 3 // 2), rel=1e-12)
    assert state["iteration"] == 24
    assert math.isclose(lrs[24], final)


def test_iterations_are_floor_n_over_batch_times_epochs(tiny_data):
    for batch, epochs in [(10, 5), (15, 3), (40, 2), (7, 1)]:
        config = tiny_config(training={"batch_size": batch, "epochs": epochs})
        trainer = GSMFlowTrainer(config, tiny_data, device="cpu")
        assert trainer.total_iterations == (40 // batch) * epochs
    capped = tiny_config(training={"max_iterations": 6})
    assert GSMFlowTrainer(capped, tiny_data, device="cpu").total_iterations == 6


def test_resuming_a_run_that_reached_its_stop_is_a_no_op(tiny_data, tmp_path):
    """fit(stop_after=k, resume=True) twice stays at k; a finished run resumed stays finished."""
    path = tmp_path / "run.pt"
    trainer = GSMFlowTrainer(tiny_config(), tiny_data, checkpoint_path=path, checkpoint_every=1)
    first = {k: v.clone() for k, v in trainer.fit(stop_after=7).state_dict().items()}
    for _ in range(2):
        again = GSMFlowTrainer(tiny_config(), tiny_data, checkpoint_path=path, checkpoint_every=1)
        flow = again.fit(stop_after=7, resume=True)
        assert torch.load(path, weights_only=True)["iteration"] == 7
        for key, value in flow.state_dict().items():
            assert torch.equal(value, first[key]), key
    done = GSMFlowTrainer(tiny_config(), tiny_data, checkpoint_path=path, checkpoint_every=1)
    finished = {k: v.clone() for k, v in done.fit(resume=True).state_dict().items()}
    total = done.total_iterations
    again = GSMFlowTrainer(tiny_config(), tiny_data, checkpoint_path=path, checkpoint_every=1)
    flow = again.fit(resume=True)
    assert torch.load(path, weights_only=True)["iteration"] == total
    assert all(torch.equal(v, finished[k]) for k, v in flow.state_dict().items())


def test_checkpoint_of_other_data_with_the_same_name_and_sizes_is_refused(
    tiny_data, checkpoint_of_seed0
):
    import dataclasses

    changed = dataclasses.replace(tiny_data, train_features=tiny_data.train_features.flip(0))
    assert changed.num_train == tiny_data.num_train and changed.name == tiny_data.name
    trainer = GSMFlowTrainer(
        tiny_config(seed=0), changed, device="cpu", checkpoint_path=checkpoint_of_seed0
    )
    with pytest.raises(CheckpointError, match="different dataset"):
        trainer.fit(resume=True)
    # the unchanged data resumes from the same file
    GSMFlowTrainer(
        tiny_config(seed=0), tiny_data, device="cpu", checkpoint_path=checkpoint_of_seed0
    ).fit(resume=True)


@pytest.mark.parametrize("shrink", [False, True])
def test_mean_flow_gets_the_data_derived_scale_and_shrinkage(tiny_data, shrink):
    from gsmflow_nflows.semantic_mean import residual_scale, residual_shrinkage

    config = tiny_config(model={"num_blocks": 1, "conditioning": "mean", "shrink_residual": shrink})
    shift = GSMFlowTrainer(config, tiny_data).build_flow()._transform._transforms[0]
    x, y, s = tiny_data.train_features, tiny_data.train_labels, tiny_data.num_seen
    scale = residual_scale(x, y, s)
    torch.testing.assert_close(shift.scale, scale.float())
    expected = residual_shrinkage(x, y, s, scale) if shrink else 0.0
    assert float(shift.shrinkage) == pytest.approx(expected)


def test_mined_samples_are_written_once_and_checkpoints_do_not_carry_them(tiny_data, tmp_path):
    """Every checkpoint used to re-save the mined samples (522 MB at the end of a quick bench)."""
    from gsmflow_nflows.training import checkpoint as checkpoint_module

    writes = []
    real_save = checkpoint_module.save_mined

    def counting_save(path, mined):
        writes.append(path)
        return real_save(path, mined)

    path = tmp_path / "run.pt"
    config = tiny_config(mining={"enabled": True})
    trainer = GSMFlowTrainer(config, tiny_data, checkpoint_path=path, checkpoint_every=2)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trainer_module, "save_mined", counting_save)
        trainer.fit(stop_after=9)  # checkpoints at 2, 4, 6, 8 and 9
    assert writes == [tmp_path / "run.mined.pt"]
    state = torch.load(path, weights_only=True)
    assert "mined" not in state and state["iteration"] == 9
    assert not any(
        isinstance(v, torch.Tensor) and v.shape[:1] == (tiny_data.num_train,)
        for v in state.values()
    )
    saved = torch.load(tmp_path / "run.mined.pt", weights_only=True)
    assert saved["features"].shape == (tiny_data.num_train, tiny_data.feature_dim)
    # The digest recorded in the checkpoint is of these samples (computed independently).
    import hashlib

    digest = hashlib.sha256()
    for tensor in (saved["features"], saved["labels"]):
        digest.update(f"{tensor.dtype}{tuple(tensor.shape)};".encode())
        digest.update(tensor.contiguous().view(torch.uint8).numpy().tobytes())
    assert state["mined_digest"] == digest.hexdigest()
    # Resuming reads them back (no second write) and ends where an uninterrupted run ends.
    writes.clear()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trainer_module, "save_mined", counting_save)
        resumed = GSMFlowTrainer(config, tiny_data, checkpoint_path=path, checkpoint_every=2)
        flow = resumed.fit(resume=True)
    assert writes == []
    _assert_same_state(_state(flow), _state(GSMFlowTrainer(config, tiny_data).fit()))


@pytest.mark.parametrize("damage", ["missing", "other"])
def test_resume_refuses_missing_or_other_mined_samples(tiny_data, tmp_path, damage):
    path = tmp_path / "run.pt"
    config = tiny_config(mining={"enabled": True})
    GSMFlowTrainer(config, tiny_data, checkpoint_path=path, checkpoint_every=2).fit(stop_after=4)
    mined = tmp_path / "run.mined.pt"
    if damage == "missing":
        mined.unlink()
    else:
        content = torch.load(mined, weights_only=True)
        content["features"] = content["features"] + 1e-3
        torch.save(content, mined)
    again = GSMFlowTrainer(config, tiny_data, checkpoint_path=path, checkpoint_every=2)
    expected = "are missing" if damage == "missing" else "other mined samples"
    with pytest.raises(CheckpointError, match=expected):
        again.fit(resume=True)


def test_an_old_checkpoint_holding_its_mined_samples_still_resumes(tiny_data, tmp_path):
    """Checkpoints written before the mined samples moved to their own file carry them inline."""
    path = tmp_path / "run.pt"
    config = tiny_config(mining={"enabled": True})
    GSMFlowTrainer(config, tiny_data, checkpoint_path=path, checkpoint_every=2).fit(stop_after=4)
    state = torch.load(path, weights_only=True)
    content = torch.load(tmp_path / "run.mined.pt", weights_only=True)
    del state["mined_digest"]
    state["mined"] = (content["features"], content["labels"])
    torch.save(state, path)
    (tmp_path / "run.mined.pt").unlink()
    flow = GSMFlowTrainer(config, tiny_data, checkpoint_path=path).fit(resume=True)
    _assert_same_state(_state(flow), _state(GSMFlowTrainer(config, tiny_data).fit()))
