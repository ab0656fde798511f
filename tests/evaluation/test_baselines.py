"""Baselines: ESZSL against its formula and objective, linear-Gaussian against sklearn."""

import dataclasses

import numpy as np
import pytest
import torch
from sklearn.linear_model import Ridge

from gsmflow_nflows.data import GZSLData
from gsmflow_nflows.evaluation import (
    BASELINES,
    BaselineScores,
    chance_baseline,
    eszsl_baseline,
    evaluate_gzsl,
    evaluate_zsl,
    fit_eszsl,
    linear_gaussian_baseline,
    linear_gaussian_features,
    per_class_accuracy,
    pooled_within_class_std,
    predict,
    ridge_unseen_means,
    run_baselines,
    seen_only_baseline,
    train_softmax_classifier,
)
from gsmflow_nflows.losses import class_means
from gsmflow_nflows.training.trainer import seeded_generator
from tests.tiny_gzsl import load_tiny, make_tiny, tiny_config


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """4 seen / 2 unseen classes, 16-d features, 5-d class vectors, 40 training images."""
    return load_tiny(make_tiny(tmp_path_factory.mktemp("baselines")))


@pytest.fixture
def evaluation():
    return tiny_config().evaluation  # 20 samples per class, 3 epochs, no step floor


def random_problem(seed=0, n=30, d=7, s=4, a=5):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n, d))
    labels = np.arange(n) % s
    embeddings = rng.normal(size=(s, a))
    return features, labels, embeddings


def numpy_eszsl(features, labels, embeddings, gamma, lam):
    """The paper's Eq. (4) as written: V = (X X^T + gI)^-1 X Y S^T (S S^T + lI)^-1."""
    x = features.T  # [D, N]
    sig = embeddings.T  # [A, S]
    y = -np.ones((features.shape[0], embeddings.shape[0]))
    y[np.arange(features.shape[0]), labels] = 1.0
    left = np.linalg.inv(x @ x.T + gamma * np.eye(x.shape[0]))
    right = np.linalg.inv(sig @ sig.T + lam * np.eye(sig.shape[0]))
    return left @ x @ y @ sig.T @ right


@pytest.mark.parametrize("gamma, lam", [(1.0, 1.0), (0.1, 10.0), (5.0, 0.01)])
def test_fit_eszsl_matches_the_formula_in_numpy(gamma, lam):
    features, labels, embeddings = random_problem()
    expected = numpy_eszsl(features, labels, embeddings, gamma, lam)
    v = fit_eszsl(
        torch.from_numpy(features),
        torch.from_numpy(labels),
        torch.from_numpy(embeddings),
        gamma=gamma,
        lam=lam,
    )
    assert v.dtype == torch.float64 and v.shape == (7, 5)
    np.testing.assert_allclose(v.numpy(), expected, rtol=1e-10, atol=1e-12)
    single = fit_eszsl(
        torch.from_numpy(features).float(),
        torch.from_numpy(labels),
        torch.from_numpy(embeddings).float(),
        gamma=gamma,
        lam=lam,
    )
    assert single.dtype == torch.float32  # returned in the features' dtype
    np.testing.assert_allclose(single.numpy(), expected, rtol=1e-4, atol=1e-5)


def test_fit_eszsl_zeroes_the_gradient_of_the_eszsl_objective():
    features, labels, embeddings = random_problem(seed=3, n=25, d=6, s=3, a=4)
    gamma, lam = 0.7, 2.5
    x = torch.from_numpy(features).T  # [D, N]
    sig = torch.from_numpy(embeddings).T  # [A, S]
    y = -torch.ones(25, 3, dtype=torch.float64)
    y[torch.arange(25), torch.from_numpy(labels)] = 1.0

    def gradient(v):
        v = v.detach().clone().requires_grad_(True)
        objective = (
            (x.T @ v @ sig - y).square().sum()
            + gamma * (v @ sig).square().sum()
            + lam * (x.T @ v).square().sum()
            + gamma * lam * v.square().sum()
        )
        (grad,) = torch.autograd.grad(objective, v)
        return grad

    v = fit_eszsl(
        torch.from_numpy(features),
        torch.from_numpy(labels),
        torch.from_numpy(embeddings),
        gamma=gamma,
        lam=lam,
    )
    scale = gradient(torch.zeros_like(v)).abs().max()  # = 2 |X Y Sig^T|, far from 0
    assert scale > 1.0
    assert gradient(v).abs().max() < 1e-10 * scale
    # the check can fail: a slightly wrong V (or another gamma) leaves a gradient
    assert gradient(v + 1e-3).abs().max() > 1e-4 * scale
    wrong = fit_eszsl(
        torch.from_numpy(features),
        torch.from_numpy(labels),
        torch.from_numpy(embeddings),
        gamma=lam,
        lam=gamma,
    )
    assert gradient(wrong).abs().max() > 1e-3 * scale


def hand_made_data() -> GZSLData:
    """3 seen classes with one-hot embeddings and features, 2 unseen classes.

    With X = I, Sig = I and gamma = lambda = 1, V = Y / 4 with Y = 2I - 11^T, so
    score(x, a) = x^T V a = (2 x.a - sum(x) sum(a)) / 4. Seen class c (a = e_c):
    (2 x_c - sum(x)) / 4. Unseen u0 = (.4, -.4, 0), u1 = (0, .4, -.4) (sum 0):
    u0 scores 0.2 (x0 - x1), u1 scores 0.2 (x1 - x2).
    """
    f = torch.tensor
    return GZSLData(
        name="HAND",
        train_features=torch.eye(3),
        train_labels=torch.arange(3),
        test_seen_features=f(
            [[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [1, -1, 0]],
        ),
        test_seen_labels=f([0, 1, 2, 1]),
        test_unseen_features=f([[1.0, -1, 1], [1, 1, -1], [0, 1, 0], [1, 0, 0]]),
        test_unseen_labels=f([0, 1, 1, 0]),
        seen_classes=f([0, 1, 2]),
        unseen_classes=f([3, 4]),
        seen_embeddings=torch.eye(3),
        unseen_embeddings=f([[0.4, -0.4, 0.0], [0.0, 0.4, -0.4]]),
        class_names=("a", "b", "c", "d", "e"),
    )


def test_eszsl_baseline_on_a_hand_made_dataset():
    data = hand_made_data()
    v = fit_eszsl(data.train_features, data.train_labels, data.seen_embeddings)
    y = 2 * torch.eye(3) - 1
    torch.testing.assert_close(v, y / 4)  # the defaults are gamma = lambda = 1
    scores = eszsl_baseline(data)
    # Seen test images, scores (c0, c1, c2 | u0, u1) -> output:
    #   (1, 0, 0):  .25 -.25 -.25 | .2  0   -> 0 (right)
    #   (0, 1, 0): -.25  .25 -.25 | -.2 .2  -> 1 (right)
    #   (0, 0, 1): -.25 -.25  .25 | 0  -.2  -> 2 (right)
    #   (1,-1, 0):  .5  -.5   0   | .4 -.2  -> 0 (label 1: wrong)
    # S = mean(1, 1/2, 1) = 5/6.
    # Unseen test images (outputs 3 = u0, 4 = u1):
    #   (1,-1, 1):  .25 -.75  .25 | .4 -.4  -> 3 (u0, right)
    #   (1, 1,-1):  .25  .25 -.75 | 0   .4  -> 4 (u1, right)
    #   (0, 1, 0): -.25  .25 -.25 | -.2 .2  -> 1 (seen: wrong)
    #   (1, 0, 0):  .25 -.25 -.25 | .2  0   -> 0 (seen: wrong)
    # U = mean(1/2, 1/2) = 1/2; H = 2 (5/6)(1/2) / (5/6 + 1/2) = 5/8.
    # T1 (u0 vs u1 only): .4>-.4, 0<.4, -.2<.2, .2>0 -> 0, 1, 1, 0: all right.
    assert scores.S == pytest.approx(5 / 6)
    assert scores.U == pytest.approx(1 / 2)
    assert scores.H == pytest.approx(5 / 8)
    assert scores.T1 == pytest.approx(1.0)
    assert scores.seconds >= 0.0


def test_fit_eszsl_refuses_bad_inputs():
    x, y, e = torch.randn(6, 3), torch.arange(6) % 2, torch.randn(2, 4)
    with pytest.raises(ValueError, match="labels"):
        fit_eszsl(x, torch.arange(5) % 2, e)
    with pytest.raises(ValueError, match="labels"):
        fit_eszsl(x, torch.arange(6) % 3, e)  # class 2 has no embedding
    with pytest.raises(ValueError, match="gamma > 0"):
        fit_eszsl(x, y, e, gamma=0.0)
    with pytest.raises(ValueError, match="lam > 0"):
        fit_eszsl(x, y, e, lam=-1.0)


def test_class_means_and_pooled_std_against_numpy(tiny):
    x = tiny.train_features.double().numpy()
    y = tiny.train_labels.numpy()
    means = np.stack([x[y == c].mean(axis=0) for c in range(tiny.num_seen)])
    np.testing.assert_allclose(
        class_means(tiny.train_features.double(), tiny.train_labels, tiny.num_seen).numpy(),
        means,
        rtol=1e-6,
    )
    squares = sum(((x[y == c] - means[c]) ** 2).sum(axis=0) for c in range(tiny.num_seen))
    expected = np.sqrt(squares / (len(y) - tiny.num_seen))
    np.testing.assert_allclose(
        pooled_within_class_std(tiny.train_features, tiny.train_labels, tiny.num_seen).numpy(),
        expected,
        rtol=1e-6,
    )
    # pooled within-class, not the overall std (which also holds the spread of the means)
    assert not np.allclose(expected, x.std(axis=0, ddof=1), rtol=0.05)


@pytest.mark.parametrize("alpha", [1.0, 0.3, 20.0])
def test_ridge_unseen_means_match_sklearn_ridge(tiny, alpha):
    seen_means = class_means(tiny.train_features.double(), tiny.train_labels, tiny.num_seen)
    predicted = ridge_unseen_means(
        tiny.seen_embeddings, seen_means, tiny.unseen_embeddings, alpha=alpha
    )
    ridge = Ridge(alpha=alpha).fit(tiny.seen_embeddings.double().numpy(), seen_means.numpy())
    expected = ridge.predict(tiny.unseen_embeddings.double().numpy())
    assert predicted.shape == (tiny.num_unseen, tiny.feature_dim)
    np.testing.assert_allclose(predicted.numpy(), expected, rtol=1e-8, atol=1e-10)


def test_ridge_unseen_means_refuses_bad_inputs():
    with pytest.raises(ValueError, match="rows"):
        ridge_unseen_means(torch.randn(3, 2), torch.randn(4, 5), torch.randn(2, 2))
    with pytest.raises(ValueError, match="features"):
        ridge_unseen_means(torch.randn(3, 2), torch.randn(3, 5), torch.randn(2, 3))
    with pytest.raises(ValueError, match="alpha > 0"):
        ridge_unseen_means(torch.randn(3, 2), torch.randn(3, 5), torch.randn(2, 2), alpha=0.0)


def test_linear_gaussian_features_have_the_ridge_means_and_the_pooled_std(tiny):
    per_class = 4000
    features, labels = linear_gaussian_features(
        tiny, per_class, generator=torch.Generator().manual_seed(3)
    )
    assert features.shape == (tiny.num_unseen * per_class, tiny.feature_dim)
    assert features.dtype == torch.float32
    assert labels.tolist() == [u for u in range(tiny.num_unseen) for _ in range(per_class)]
    seen_means = class_means(tiny.train_features.double(), tiny.train_labels, tiny.num_seen)
    means = ridge_unseen_means(tiny.seen_embeddings, seen_means, tiny.unseen_embeddings)
    sigma = pooled_within_class_std(tiny.train_features, tiny.train_labels, tiny.num_seen)
    noise = features.double() - means[labels]
    # std of a normal sample of n: relative error ~ 1 / sqrt(2n) = 0.8% here
    torch.testing.assert_close(noise.std(dim=0), sigma, rtol=0.04, atol=0.0)
    for u in range(tiny.num_unseen):
        generated_mean = features[labels == u].double().mean(dim=0)
        assert ((generated_mean - means[u]).abs() < 5 * sigma / per_class**0.5).all()


def test_linear_gaussian_features_are_the_formula_in_one_piece(tiny, monkeypatch):
    """Blocks of rows (bounded memory) give exactly mu + sigma * eps of one big draw."""
    from gsmflow_nflows.evaluation import baselines

    monkeypatch.setattr(baselines, "_ROWS_PER_BLOCK", 7)  # blocks that split classes
    features, labels = linear_gaussian_features(
        tiny, 30, generator=torch.Generator().manual_seed(5)
    )
    seen_means = class_means(tiny.train_features.double(), tiny.train_labels, tiny.num_seen)
    means = ridge_unseen_means(tiny.seen_embeddings, seen_means, tiny.unseen_embeddings)
    sigma = pooled_within_class_std(tiny.train_features, tiny.train_labels, tiny.num_seen)
    noise = torch.randn(
        labels.numel(), tiny.feature_dim, generator=torch.Generator().manual_seed(5)
    )
    assert torch.equal(features, (means[labels] + sigma * noise.double()).float())


def _without_seconds(scores: BaselineScores) -> dict:
    values = scores.to_dict()
    values.pop("seconds")
    return values


def test_linear_gaussian_baseline_is_gsmflows_classifier_on_the_last_epoch(tiny, evaluation):
    scores = linear_gaussian_baseline(tiny, evaluation, generator=torch.Generator().manual_seed(11))
    # the same steps, by hand: two seeds, the features, the classifiers, the last epoch
    generator = torch.Generator().manual_seed(11)
    gzsl_seed, zsl_seed = torch.randint(0, 2**62, (2,), generator=generator).tolist()
    features, labels = linear_gaussian_features(
        tiny, evaluation.samples_per_class, generator=generator
    )
    gzsl = evaluate_gzsl(
        seen_features=tiny.train_features,
        seen_labels=tiny.train_labels,
        generated_features=features,
        generated_labels=labels,
        test_seen_features=tiny.test_seen_features,
        test_seen_labels=tiny.test_seen_labels,
        test_unseen_features=tiny.test_unseen_features,
        test_unseen_labels=tiny.test_unseen_labels,
        num_seen=tiny.num_seen,
        num_unseen=tiny.num_unseen,
        generator=torch.Generator().manual_seed(gzsl_seed),
        **evaluation.classifier_settings(),
    )
    zsl = evaluate_zsl(
        generated_features=features,
        generated_labels=labels,
        test_unseen_features=tiny.test_unseen_features,
        test_unseen_labels=tiny.test_unseen_labels,
        num_unseen=tiny.num_unseen,
        generator=torch.Generator().manual_seed(zsl_seed),
        **evaluation.classifier_settings(),
    )
    assert len(gzsl) == evaluation.classifier_epochs
    assert (scores.S, scores.U, scores.H, scores.T1) == (
        gzsl[-1].S,
        gzsl[-1].U,
        gzsl[-1].H,
        zsl[-1],
    )


def test_linear_gaussian_baseline_is_deterministic_by_seed(tiny, evaluation):
    def run(seed):
        return linear_gaussian_baseline(
            tiny, evaluation, generator=torch.Generator().manual_seed(seed)
        )

    assert _without_seconds(run(5)) == _without_seconds(run(5))
    first, other = (
        linear_gaussian_features(tiny, 10, generator=torch.Generator().manual_seed(seed))[0]
        for seed in (5, 6)
    )
    assert not torch.equal(first, other)


def test_linear_gaussian_baseline_takes_samples_per_class_from_the_config(tiny, evaluation):
    # a different number of generated features changes the classifier's training set
    few = dataclasses.replace(evaluation, samples_per_class=1)
    many = dataclasses.replace(evaluation, samples_per_class=200)
    a = linear_gaussian_baseline(tiny, few, generator=torch.Generator().manual_seed(0))
    b = linear_gaussian_baseline(tiny, many, generator=torch.Generator().manual_seed(0))
    assert _without_seconds(a) != _without_seconds(b)


def test_seen_only_baseline_has_no_unseen_accuracy(tiny, evaluation):
    evaluation = dataclasses.replace(evaluation, classifier_lr=1e-2, classifier_epochs=30)
    scores = seen_only_baseline(tiny, evaluation, generator=torch.Generator().manual_seed(2))
    assert scores.U == 0.0 and scores.H == 0.0 and scores.T1 == 0.0
    classifier = train_softmax_classifier(
        tiny.train_features,
        tiny.train_labels,
        tiny.num_seen,
        **evaluation.classifier_settings(),
        generator=torch.Generator().manual_seed(2),
    )
    expected = per_class_accuracy(
        predict(classifier, tiny.test_seen_features), tiny.test_seen_labels
    )
    assert scores.S == expected
    assert scores.S > 1 / tiny.num_seen  # it learned something on the seen classes


def test_chance_baseline():
    scores = chance_baseline(hand_made_data())  # 3 seen, 2 unseen
    assert (scores.S, scores.U, scores.H) == (1 / 5, 1 / 5, 1 / 5)
    assert scores.T1 == 1 / 2 and scores.seconds == 0.0


def test_run_baselines_names_determinism_and_seeds(tiny, evaluation):
    first = run_baselines(tiny, evaluation, seed=4, device="cpu")
    again = run_baselines(tiny, evaluation, seed=4, device="cpu")
    assert tuple(first) == BASELINES == ("eszsl", "linear_gaussian", "seen_only", "chance")
    assert {k: _without_seconds(v) for k, v in first.items()} == {
        k: _without_seconds(v) for k, v in again.items()
    }
    assert _without_seconds(first["eszsl"]) == _without_seconds(eszsl_baseline(tiny))
    assert _without_seconds(first["linear_gaussian"]) == _without_seconds(
        linear_gaussian_baseline(tiny, evaluation, generator=seeded_generator(4, 9))
    )
    assert _without_seconds(first["seen_only"]) == _without_seconds(
        seen_only_baseline(tiny, evaluation, generator=seeded_generator(4, 8))
    )
    assert first["chance"] == chance_baseline(tiny)
    other = run_baselines(tiny, evaluation, seed=5)
    assert _without_seconds(other["eszsl"]) == _without_seconds(first["eszsl"])  # no seed
    for scores in first.values():
        assert set(scores.to_dict()) == {"S", "U", "H", "T1", "seconds"}
        assert all(0.0 <= getattr(scores, m) <= 1.0 for m in ("S", "U", "H", "T1"))


def test_baseline_scores_are_frozen():
    scores = BaselineScores(S=0.5, U=0.25, H=1 / 3, T1=0.5, seconds=1.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        scores.S = 1.0  # type: ignore[misc]
    assert scores.to_dict() == {"S": 0.5, "U": 0.25, "H": 1 / 3, "T1": 0.5, "seconds": 1.0}


def test_baselines_refuse_a_missing_generator(tiny, evaluation):
    with pytest.raises(TypeError, match="torch.Generator"):
        linear_gaussian_baseline(tiny, evaluation, generator=0)
    with pytest.raises(TypeError, match="EvaluationConfig"):
        seen_only_baseline(tiny, {"lr": 1e-3}, generator=torch.Generator())


def _hand_gzsl(classifier, data, offset):
    """S, U, H of a classifier with ``offset`` subtracted from the seen scores, by hand."""
    with torch.no_grad():
        seen = classifier(data.test_seen_features)
        unseen = classifier(data.test_unseen_features)
    seen[:, : data.num_seen] -= offset
    unseen[:, : data.num_seen] -= offset

    def per_class(predicted, truth):
        return np.mean([(predicted[truth == c] == c).mean() for c in np.unique(truth)])

    s = per_class(seen.argmax(1).numpy(), data.test_seen_labels.numpy())
    u = per_class(unseen.argmax(1).numpy(), data.test_unseen_labels.numpy() + data.num_seen)
    return s, u, 0.0 if s + u == 0 else 2 * s * u / (s + u)


def test_calibrated_linear_gaussian_is_the_same_classifier_scored_with_a_validation_offset(
    tiny_root_pair, evaluation
):
    """The offset is chosen on the validation split alone; the test classifier is unchanged."""
    from gsmflow_nflows.evaluation.baselines import calibrated_linear_gaussian_baseline
    from gsmflow_nflows.evaluation.calibration import choose_calibration
    from gsmflow_nflows.runtime import Stream

    test, val = tiny_root_pair
    scores = calibrated_linear_gaussian_baseline(test, val, evaluation, seed=3)
    # The offset: an independently trained validation classifier, the exact H maximiser.
    generator = seeded_generator(3, Stream.CALIBRATED_BASELINE)
    x, y = linear_gaussian_features(val, evaluation.samples_per_class, generator=generator)
    val_classifier = train_softmax_classifier(
        torch.cat([val.train_features, x]),
        torch.cat([val.train_labels, y + val.num_seen]),
        val.num_seen + val.num_unseen,
        **evaluation.classifier_settings(),
        generator=generator,
    )
    offset, _ = choose_calibration(
        val_classifier,
        val_seen_features=val.test_seen_features,
        val_seen_labels=val.test_seen_labels,
        val_unseen_features=val.test_unseen_features,
        val_unseen_labels=val.test_unseen_labels,
        num_seen=val.num_seen,
    )
    assert scores.offset == offset
    # The test scores: the uncalibrated baseline's own classifier, scored with that offset.
    plain = linear_gaussian_baseline(
        test, evaluation, generator=seeded_generator(3, Stream.LINEAR_GAUSSIAN_BASELINE)
    )
    assert scores.T1 == plain.T1  # the offset does not touch the ZSL classifier
    g = seeded_generator(3, Stream.LINEAR_GAUSSIAN_BASELINE)
    gzsl_seed, _ = torch.randint(0, 2**62, (2,), generator=g).tolist()
    xt, yt = linear_gaussian_features(test, evaluation.samples_per_class, generator=g)
    test_classifier = train_softmax_classifier(
        torch.cat([test.train_features, xt]),
        torch.cat([test.train_labels, yt + test.num_seen]),
        test.num_seen + test.num_unseen,
        **evaluation.classifier_settings(),
        generator=torch.Generator().manual_seed(gzsl_seed),
    )
    s, u, h = _hand_gzsl(test_classifier, test, offset)
    assert (scores.S, scores.U, scores.H) == pytest.approx((s, u, h), abs=1e-12)
    assert scores.to_dict()["offset"] == offset


def test_calibrated_baseline_offset_never_reads_the_test_images(tiny_root_pair, evaluation):
    from gsmflow_nflows.evaluation.baselines import calibrated_linear_gaussian_baseline

    test, val = tiny_root_pair
    scrambled = dataclasses.replace(
        test,
        test_seen_features=torch.rand_like(test.test_seen_features),
        test_unseen_features=torch.rand_like(test.test_unseen_features),
    )
    a = calibrated_linear_gaussian_baseline(test, val, evaluation, seed=1)
    b = calibrated_linear_gaussian_baseline(scrambled, val, evaluation, seed=1)
    assert a.offset == b.offset


def test_run_baselines_adds_the_calibrated_one_only_with_a_validation_split(
    tiny_root_pair, evaluation
):
    test, val = tiny_root_pair
    plain = run_baselines(test, evaluation, seed=2)
    both = run_baselines(test, evaluation, seed=2, val_data=val)
    assert "linear_gaussian_calibrated" not in plain
    assert set(both) == set(plain) | {"linear_gaussian_calibrated"}
    assert _without_seconds(both["linear_gaussian"]) == _without_seconds(plain["linear_gaussian"])
    assert both["linear_gaussian_calibrated"].offset is not None


@pytest.fixture(scope="module")
def tiny_root_pair(tmp_path_factory):
    root = make_tiny(tmp_path_factory.mktemp("calibrated"))
    return load_tiny(root), load_tiny(root, split="val")
