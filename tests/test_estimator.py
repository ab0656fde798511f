"""GSMFlowClassifier: scikit-learn's estimator contract, the bench's model, input errors.

Every fit uses the ``smoke`` preset on tiny data (a fraction of a second each).
"""

from __future__ import annotations

import inspect
import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils import estimator_checks

from gsmflow_nflows import GSMFlowClassifier
from gsmflow_nflows.data import load_dataset
from gsmflow_nflows.errors import ConfigError, DatasetError
from gsmflow_nflows.evaluation.protocols import run_protocol
from gsmflow_nflows.training.presets import preset_config
from tests.tiny_gzsl import load_tiny, make_tiny

# The smoke classifier takes 5 Adam steps on the tiny set: too few to score anything.
STEPS = {"evaluation.classifier_min_steps": 300}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny dataset as arrays: raw (unscaled) features, class ids, every class vector."""
    root = make_tiny(tmp_path_factory.mktemp("estimator-data"))
    data = load_tiny(root)
    raw = load_dataset("TINY", data_root=root, preprocess=False)
    embeddings = torch.empty(data.num_seen + data.num_unseen, data.embedding_dim)
    embeddings[data.seen_classes] = data.seen_embeddings
    embeddings[data.unseen_classes] = data.unseen_embeddings
    num_test_seen = raw.test_seen_features.shape[0]
    return {
        "data": data,
        "X": raw.train_features,
        "y": data.seen_classes[data.train_labels],
        "E": embeddings,
        "X_test": torch.cat([raw.test_seen_features, raw.test_unseen_features]),
        "y_test": torch.cat(
            [data.seen_classes[data.test_seen_labels], data.unseen_classes[data.test_unseen_labels]]
        ),
        "num_test_seen": num_test_seen,
    }


@pytest.fixture(scope="module")
def fitted(tiny):
    return GSMFlowClassifier(preset="smoke", overrides=STEPS).fit(tiny["X"], tiny["y"], tiny["E"])


def _linear_toy(seed: int = 0, per_class: int = 30):
    """6 classes (seen 0, 2, 3, 5; unseen 1, 4) whose means are a linear map of 3 attributes."""
    rng = np.random.default_rng(seed)
    embeddings = rng.random((6, 3)) + 0.2
    means = embeddings @ (3 * rng.normal(size=(3, 8)))

    def draw(classes):
        y = np.repeat(classes, per_class)
        return means[y] + 0.05 * rng.normal(size=(y.size, 8)), y

    return embeddings, draw(np.array([0, 2, 3, 5])), draw(np.array([1, 4]))


def _per_class_accuracy(predictions, labels) -> float:
    """By hand: the mean over the classes in ``labels`` of the share predicted right."""
    return float(np.mean([np.mean(predictions[labels == c] == c) for c in np.unique(labels)]))


# ---- scikit-learn's estimator contract --------------------------------------------------


def test_init_stores_its_arguments_unchanged_and_checks_nothing():
    overrides = {"training.lr": 1e-3}
    model = GSMFlowClassifier(preset="huge", overrides=overrides, seed=7, device="tpu")
    assert model.overrides is overrides
    assert model.get_params() == {
        "preset": "huge",
        "overrides": overrides,
        "seed": 7,
        "device": "tpu",
        "precision": "fp32",
    }
    with pytest.raises(ConfigError, match="Unknown preset 'huge'"):  # checked in fit
        model.fit(np.eye(3), [0, 1, 1], np.ones((3, 2)))


def test_get_params_and_set_params_round_trip():
    model = GSMFlowClassifier()
    assert model.get_params() == {
        "preset": "quick",
        "overrides": None,
        "seed": 0,
        "device": None,
        "precision": "fp32",
    }
    changed = {"preset": "smoke", "overrides": {"model.num_blocks": 1}, "seed": 3}
    assert model.set_params(**changed) is model
    assert model.get_params() == {**changed, "device": None, "precision": "fp32"}
    assert GSMFlowClassifier(**model.get_params()).get_params() == model.get_params()
    with pytest.raises(ValueError, match="Invalid parameter 'lr'"):
        model.set_params(lr=1e-3)


def test_clone_gives_an_unfitted_estimator_with_equal_params(fitted, tiny):
    twin = clone(fitted)
    assert twin.get_params() == fitted.get_params()
    assert twin.overrides is not fitted.overrides  # a copy, as clone makes
    assert not any(name.endswith("_") for name in vars(twin))
    with pytest.raises(NotFittedError):
        twin.predict(tiny["X_test"])
    # Fitting the clone gives the original's model back (same params, same seed).
    twin.fit(tiny["X"], tiny["y"], tiny["E"])
    np.testing.assert_array_equal(
        twin.predict_proba(tiny["X_test"]), fitted.predict_proba(tiny["X_test"])
    )


def test_fit_sets_only_attributes_ending_in_underscore_and_changes_no_parameter(tiny):
    overrides = dict(STEPS)
    model = GSMFlowClassifier(preset="smoke", overrides=overrides)
    before = dict(vars(model))
    assert model.fit(tiny["X"], tiny["y"], tiny["E"]) is model
    added = set(vars(model)) - set(before)
    assert added and all(name.endswith("_") for name in added)
    assert all(vars(model)[name] is value for name, value in before.items())
    assert overrides == STEPS  # not mutated
    assert model.n_features_in_ == 16 and model.classes_.tolist() == list(range(6))
    assert model.config_.evaluation.classifier_min_steps == 300  # the override was applied


class _FixedEmbeddings(GSMFlowClassifier):
    """``fit(X, y)`` with 12 fixed class vectors, so that scikit-learn's own checks can fit."""

    def fit(self, X, y):
        embeddings = np.random.default_rng(0).random((12, 4)) + 0.1
        return super().fit(X, y, embeddings)


#: The checks of ``check_estimator`` that cannot apply to a zero-shot classifier.
NOT_APPLICABLE = {
    "check_classifiers_classes": "class labels are row indices of class_embeddings, not strings",
    "check_classifiers_train": "predict_proba has a column per class of class_embeddings, "
    "seen or not, and the smoke preset's accuracy means nothing",
    "check_dtype_object": "object arrays are refused (DatasetError), not converted",
    "check_supervised_y_2d": "a column-vector y is an error, not a warning",
}


def test_scikit_learn_check_estimator_passes_but_for_the_checks_that_cannot_apply():
    """``check_estimator`` calls ``fit(X, y)``; through a subclass that supplies fixed class
    vectors, every check passes except the four a zero-shot classifier cannot meet."""
    if (
        "expected_failed_checks"
        not in inspect.signature(estimator_checks.check_estimator).parameters
    ):
        pytest.skip("scikit-learn < 1.6 has no expected_failed_checks")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = estimator_checks.check_estimator(
            _FixedEmbeddings(preset="smoke"),
            on_fail=None,
            expected_failed_checks=NOT_APPLICABLE,
        )
    failed = {r["check_name"] for r in results if r["status"] == "failed"}
    xfailed = {r["check_name"] for r in results if r["status"] == "xfail"}
    assert not failed
    assert xfailed == set(NOT_APPLICABLE)  # each of them really fails: the list is not stale


@pytest.mark.parametrize(
    "check",
    [
        "check_parameters_default_constructible",
        "check_get_params_invariance",
        "check_set_params",
        "check_no_attributes_set_in_init",
        "check_estimators_unfitted",
        "check_mixin_order",
        "check_do_not_raise_errors_in_init_or_set_params",
    ],
)
def test_scikit_learn_checks_that_need_no_fit_pass_on_the_class_itself(check):
    getattr(estimator_checks, check)("GSMFlowClassifier", GSMFlowClassifier())


# ---- what it predicts -------------------------------------------------------------------


def test_predict_is_the_argmax_of_predict_proba_and_ids_are_in_range(fitted, tiny):
    proba = fitted.predict_proba(tiny["X_test"])
    predictions = fitted.predict(tiny["X_test"])
    assert isinstance(proba, np.ndarray) and isinstance(predictions, np.ndarray)
    assert proba.shape == (tiny["X_test"].shape[0], 6) and proba.dtype == np.float64
    assert (proba >= 0).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(predictions, proba.argmax(axis=1))
    assert predictions.dtype == np.int64 and set(predictions) <= set(range(6))


def test_seen_and_unseen_classes_of_a_separable_toy_keep_their_own_ids():
    """Seen ids 0, 2, 3, 5 and unseen 1, 4 (not 0..S-1 then S..): a mix-up of the output
    order would show. With class means linear in the class vectors, a near-exact ridge map
    (alpha 1e-3) places the generated unseen classes where the real ones are."""
    embeddings, (X, y), (X_unseen, y_unseen) = _linear_toy()
    overrides = {**STEPS, "model.mean_ridge_alpha": 1e-3}
    model = GSMFlowClassifier(preset="smoke", overrides=overrides).fit(X, y, embeddings)
    assert model.seen_classes_.tolist() == [0, 2, 3, 5]
    assert model.unseen_classes_.tolist() == [1, 4]
    assert _per_class_accuracy(model.predict(X), y) >= 0.95
    assert _per_class_accuracy(model.predict(X_unseen), y_unseen) >= 0.9


def test_score_is_the_harmonic_mean_of_per_class_accuracies_computed_by_hand(fitted, tiny):
    X_test, y_test = tiny["X_test"], tiny["y_test"].numpy()
    split = tiny["num_test_seen"]
    predictions = fitted.predict(X_test)
    s = _per_class_accuracy(predictions[:split], y_test[:split])
    u = _per_class_accuracy(predictions[split:], y_test[split:])
    assert 0 < s < 1 and 0 < u < 1  # not a degenerate case
    assert fitted.score(X_test, y_test) == pytest.approx(2 * s * u / (s + u), abs=1e-12)
    # One kind of class only: per-class accuracy among all classes.
    assert fitted.score(X_test[:split], y_test[:split]) == pytest.approx(s, abs=1e-12)
    assert fitted.score(X_test[split:], y_test[split:]) == pytest.approx(u, abs=1e-12)


def test_it_is_the_model_the_bench_scores_under_the_final_protocol(tiny):
    """Raw features in (the bench reads the loader's scaled ones): the same S, U and H.

    30 classifier steps, three seeds: there the classifier's random stream alone changes
    a quarter to a half of the predictions, so S and U tell two classifiers apart.
    """
    data, split, y_test = tiny["data"], tiny["num_test_seen"], tiny["y_test"].numpy()
    overrides = {"evaluation.classifier_min_steps": 30}
    for seed in (0, 1, 2):
        config = preset_config("TINY", data, "smoke").with_overrides(overrides).with_seed(seed)
        bench = run_protocol("final", config, lambda split: data, device="cpu")
        model = GSMFlowClassifier(preset="smoke", overrides=overrides, seed=seed)
        predictions = model.fit(tiny["X"], tiny["y"], tiny["E"]).predict(tiny["X_test"])
        s = _per_class_accuracy(predictions[:split], y_test[:split])
        u = _per_class_accuracy(predictions[split:], y_test[split:])
        assert (s, u) == (pytest.approx(bench.S), pytest.approx(bench.U))
        assert model.score(tiny["X_test"], y_test) == pytest.approx(bench.H)


def test_numpy_and_torch_inputs_give_identical_predictions(fitted, tiny):
    as_numpy = GSMFlowClassifier(preset="smoke", overrides=STEPS).fit(
        tiny["X"].numpy().astype(np.float64),
        tiny["y"].numpy().astype(np.int32),
        tiny["E"].numpy().astype(np.float64),
    )
    X_test = tiny["X_test"]
    expected = fitted.predict_proba(X_test)
    np.testing.assert_array_equal(as_numpy.predict_proba(X_test.numpy()), expected)
    np.testing.assert_array_equal(fitted.predict_proba(X_test.numpy()), expected)
    np.testing.assert_array_equal(fitted.predict(X_test.tolist()), fitted.predict(X_test))


def test_a_fit_is_deterministic_for_a_fixed_seed_and_the_seed_matters(fitted, tiny):
    args = tiny["X"], tiny["y"], tiny["E"]
    again = GSMFlowClassifier(preset="smoke", overrides=STEPS).fit(*args)
    other = GSMFlowClassifier(preset="smoke", overrides=STEPS, seed=1).fit(*args)
    expected = fitted.predict_proba(tiny["X_test"])
    np.testing.assert_array_equal(again.predict_proba(tiny["X_test"]), expected)
    assert not np.array_equal(other.predict_proba(tiny["X_test"]), expected)


def test_preprocessing_is_the_loaders_min_max_scaling_fitted_in_fit(fitted, tiny):
    data = tiny["data"]  # the loader's scaled training features
    scaled = fitted.scaler_.transform(tiny["X"].numpy()) / fitted.scale_divisor_
    np.testing.assert_array_equal(scaled.astype(np.float32), data.train_features.numpy())


# ---- errors -----------------------------------------------------------------------------


def _args(**change):
    rng = np.random.default_rng(0)
    args = {
        "X": rng.random((12, 4)),
        "y": np.arange(12) % 3,
        "class_embeddings": rng.random((4, 2)) + 0.1,
    }
    return {**args, **change}


BAD_FIT_INPUTS = {
    "X 1-D": (_args(X=np.ones(12)), "X must be 2-D"),
    "X NaN": (_args(X=np.where(np.eye(12, 4) > 0, np.nan, 1.0)), "X holds 4 NaN or inf"),
    "X one feature": (_args(X=np.ones((12, 1))), r"X has 1 feature\(s\)"),
    "X no rows": (_args(X=np.ones((0, 4)), y=np.zeros(0, int)), "X has 0 sample"),
    "X strings": (_args(X=np.full((12, 4), "a")), "X must hold real numbers"),
    "y too short": (_args(y=np.arange(11) % 3), "y has 11 entries, but X has 12 rows"),
    "y out of range": (_args(y=np.arange(12) % 5), r"class ids 0\.\.4, but there are 4 classes"),
    "y negative": (_args(y=np.arange(12) % 3 - 1), r"class ids -1\.\.1"),
    "y fractional": (_args(y=np.arange(12) / 2), "continuous"),
    "y None": (_args(y=None), "requires y to be passed"),
    "y every class": (_args(y=np.arange(12) % 4), "none is unseen"),
    "y one class": (_args(y=np.zeros(12, int)), "y holds 1 class"),
    "zero class vector": (_args(class_embeddings=np.eye(4, 2)), "class_embeddings row 2"),
    "E NaN": (_args(class_embeddings=np.full((4, 2), np.nan)), "class_embeddings holds 8"),
}


@pytest.mark.parametrize("case", BAD_FIT_INPUTS, ids=list(BAD_FIT_INPUTS))
def test_bad_fit_inputs_give_one_clear_dataset_error(case):
    args, message = BAD_FIT_INPUTS[case]
    with pytest.raises(DatasetError, match=message) as error:
        GSMFlowClassifier(preset="smoke").fit(**args)
    assert "\n" not in str(error.value)


BAD_PARAMS = {
    "unknown field": ({"overrides": {"training.lrr": 1.0}}, "'training.lrr'.*no field 'lrr'"),
    "unknown section": ({"overrides": {"flow.lr": 1.0}}, "Unknown setting 'flow.lr'"),
    "no section": ({"overrides": {"lr": 1.0}}, "Unknown setting 'lr'"),
    "bad value": ({"overrides": {"training.lr": -1.0}}, "training.lr must be > 0"),
    "overrides not a dict": ({"overrides": ["training.lr"]}, "overrides must be a dict"),
    "preset": ({"preset": "huge"}, "Unknown preset 'huge'"),
    "precision": ({"precision": "fp8"}, "Unknown precision 'fp8'"),
    "seed": ({"seed": 1.5}, "seed must be an integer"),
    "device": ({"device": "nowhere"}, "Unknown device 'nowhere'"),
}


@pytest.mark.parametrize("case", BAD_PARAMS, ids=list(BAD_PARAMS))
def test_bad_parameters_give_one_config_error_in_fit(case):
    params, message = BAD_PARAMS[case]
    model = GSMFlowClassifier(preset="smoke").set_params(**params)  # accepted here
    with pytest.raises(ConfigError, match=message) as error:
        model.fit(**_args())
    assert "\n" not in str(error.value)


def test_predict_checks_its_input_against_the_fitted_model(fitted, tiny):
    with pytest.raises(NotFittedError):
        GSMFlowClassifier().predict(tiny["X_test"])
    with pytest.raises(NotFittedError):
        GSMFlowClassifier().score(tiny["X_test"], tiny["y_test"])
    with pytest.raises(DatasetError, match="X has 15 features, but GSMFlowClassifier is"):
        fitted.predict(tiny["X_test"][:, :15])
    with pytest.raises(DatasetError, match="Reshape your data"):
        fitted.predict(tiny["X_test"][0])
    with pytest.raises(DatasetError, match="NaN or inf"):
        fitted.predict_proba(torch.full((2, 16), float("inf")))
    with pytest.raises(DatasetError, match=r"class ids 0\.\.6, but there are 6 classes"):
        fitted.score(tiny["X_test"][:2], [0, 6])
