"""Loss plugins of GSMFlow: NLL per dimension, prototype loss, visual perturbation,
and boundary sample mining with a relation network.

References:
    Chen et al., "GSMFlow: Generation Shifts Mitigating Flow for Generalized
    Zero-Shot Learning", IEEE Transactions on Multimedia, 2022.
"""

from gsmflow_nflows.losses.boundary import (
    BoundarySampleMiner,
    RelationNetwork,
    train_relation_network,
)
from gsmflow_nflows.losses.nll import nll_per_dim
from gsmflow_nflows.losses.perturbation import VisualPerturbation
from gsmflow_nflows.losses.prototype import PrototypeLoss, class_means

__all__ = [
    "BoundarySampleMiner",
    "PrototypeLoss",
    "RelationNetwork",
    "VisualPerturbation",
    "class_means",
    "nll_per_dim",
    "train_relation_network",
]
