"""GSMFlow for generalized zero-shot learning, built on nflows.

The public API: the semantic-conditioned coupling transform, the relative
positioning encoder, the one-call model factory and feature generation, and the
exceptions raised for problems a user can fix (:mod:`gsmflow_nflows.errors`).

References:
    Chen et al., "GSMFlow: Generation Shifts Mitigating Flow for Generalized
    Zero-Shot Learning", IEEE Transactions on Multimedia, 2022.
"""

__version__ = "0.1.0"

from gsmflow_nflows.context_groups import ContextGroups
from gsmflow_nflows.errors import (
    CheckpointError,
    ConfigError,
    DatasetError,
    GSMFlowError,
    WriteError,
)
from gsmflow_nflows.model import build_gsmflow, generate_features, glow_block
from gsmflow_nflows.semantic import RelativePositioningEncoder, select_anchors
from gsmflow_nflows.transforms import (
    SemanticAffineCouplingTransform,
    SemanticCouplingNet,
    soft_clamp,
)

__all__ = [
    "CheckpointError",
    "ConfigError",
    "ContextGroups",
    "DatasetError",
    "GSMFlowClassifier",
    "GSMFlowError",
    "RelativePositioningEncoder",
    "SemanticAffineCouplingTransform",
    "SemanticCouplingNet",
    "WriteError",
    "build_gsmflow",
    "generate_features",
    "glow_block",
    "select_anchors",
    "soft_clamp",
]


def __getattr__(name: str) -> object:
    """``GSMFlowClassifier`` on first use: it imports scikit-learn and the trainer (PEP 562)."""
    if name == "GSMFlowClassifier":
        from gsmflow_nflows.estimator import GSMFlowClassifier

        return GSMFlowClassifier
    raise AttributeError(f"module 'gsmflow_nflows' has no attribute {name!r}")
