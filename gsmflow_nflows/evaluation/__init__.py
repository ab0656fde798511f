"""Evaluation: GZSL/ZSL metrics, the softmax classifier, per-epoch evaluation and baselines.

Accuracies are fractions in ``[0, 1]``; multiply by 100 for display.

References:
    Chen et al., "GSMFlow: Generation Shifts Mitigating Flow for Generalized
    Zero-Shot Learning", IEEE Transactions on Multimedia, 2022.
"""

from gsmflow_nflows.evaluation.baselines import (
    BASELINES,
    BaselineScores,
    chance_baseline,
    eszsl_baseline,
    fit_eszsl,
    linear_gaussian_baseline,
    linear_gaussian_features,
    pooled_within_class_std,
    ridge_unseen_means,
    run_baselines,
    seen_only_baseline,
)
from gsmflow_nflows.evaluation.classifier import (
    SoftmaxClassifier,
    classifier_epochs,
    generated_sample_weights,
    gzsl_training_set,
    predict,
    train_softmax_classifier,
)
from gsmflow_nflows.evaluation.gzsl import evaluate_generated, evaluate_gzsl, evaluate_zsl
from gsmflow_nflows.evaluation.metrics import (
    GZSLScores,
    gzsl_scores,
    harmonic_mean,
    per_class_accuracy,
    zsl_top1,
)

__all__ = [
    "BASELINES",
    "BaselineScores",
    "GZSLScores",
    "SoftmaxClassifier",
    "chance_baseline",
    "classifier_epochs",
    "eszsl_baseline",
    "evaluate_generated",
    "evaluate_gzsl",
    "evaluate_zsl",
    "fit_eszsl",
    "generated_sample_weights",
    "gzsl_scores",
    "gzsl_training_set",
    "harmonic_mean",
    "linear_gaussian_baseline",
    "linear_gaussian_features",
    "per_class_accuracy",
    "pooled_within_class_std",
    "predict",
    "ridge_unseen_means",
    "run_baselines",
    "seen_only_baseline",
    "train_softmax_classifier",
    "zsl_top1",
]
