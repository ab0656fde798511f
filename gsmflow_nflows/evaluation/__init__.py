"""Evaluation: GZSL/ZSL metrics, the softmax classifier and per-epoch evaluation.

Accuracies are fractions in ``[0, 1]``; multiply by 100 for display.

References:
    Chen et al., "GSMFlow: Generation Shifts Mitigating Flow for Generalized
    Zero-Shot Learning", IEEE Transactions on Multimedia, 2022.
"""

from gsmflow_nflows.evaluation.classifier import (
    classifier_epochs,
    SoftmaxClassifier,
    predict,
    train_softmax_classifier,
)
from gsmflow_nflows.evaluation.gzsl import evaluate_gzsl, evaluate_zsl
from gsmflow_nflows.evaluation.metrics import (
    GZSLScores,
    gzsl_scores,
    harmonic_mean,
    per_class_accuracy,
    zsl_top1,
)

__all__ = [
    "GZSLScores",
    "SoftmaxClassifier",
    "classifier_epochs",
    "evaluate_gzsl",
    "evaluate_zsl",
    "gzsl_scores",
    "harmonic_mean",
    "per_class_accuracy",
    "predict",
    "train_softmax_classifier",
    "zsl_top1",
]
