"""Prototype loss: the flow's inverse at ``z = 0`` should land on the class centroid.

GSMFlow (Sec. 3, "prototype loss"): for every seen class ``c`` the flow is inverted
at the mode ``z = 0`` of the base distribution with the semantic context
``h(a_c)``; the result is pulled towards the mean of the real training features
of class ``c``. As in the authors' code, ``h`` is computed without gradient, so
only the flow's transform receives this gradient (not the semantic encoder).

References:
    Chen et al., "GSMFlow: Generation Shifts Mitigating Flow for Generalized
    Zero-Shot Learning", IEEE Transactions on Multimedia, 2022.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from nflows.flows.base import Flow
from torch import Tensor

from gsmflow_nflows._checks import check_int, check_labels, check_matrix, check_real


def class_means(features: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """Mean feature vector of every class (vectorised with ``index_add``).

    Args:
        features: Features, shape ``[N, D]``, floating point and finite.
        labels: Class ids in ``[0, num_classes)``, shape ``[N]``.
        num_classes: Number of classes ``C``.

    Returns:
        The class centroids, shape ``[C, D]``, on the device and dtype of ``features``.

    Raises:
        ValueError: On mismatched shapes, out-of-range labels, or a class without samples.

    Example:
        >>> x = torch.tensor([[0.0, 0.0], [2.0, 4.0], [5.0, 5.0]])
        >>> class_means(x, torch.tensor([0, 0, 1]), 2)
        tensor([[1., 2.],
                [5., 5.]])
    """
    num_classes = check_int("num_classes", num_classes, minimum=1)
    features = check_matrix("features", features)
    labels = check_labels("labels", labels, length=features.shape[0], num_classes=num_classes).to(
        features.device
    )
    sums = features.new_zeros(num_classes, features.shape[1]).index_add_(0, labels, features)
    counts = torch.bincount(labels, minlength=num_classes)
    empty = (counts == 0).nonzero().flatten().tolist()
    if empty:
        raise ValueError(
            f"Expected every class in [0, {num_classes - 1}] to have samples, "
            f"got none for classes {empty[:10]}{'...' if len(empty) > 10 else ''}."
        )
    return sums / counts.unsqueeze(1).to(features.dtype)


class PrototypeLoss:
    """``weight * MSE(flow^-1(0 | h(a_c)), mean_c)`` over the seen classes.

    The flow is an ``nflows.flows.Flow`` whose transform maps data to noise and
    whose ``_embedding_net`` maps raw class embeddings ``a_c`` to the context
    ``h(a_c)``. The context is computed under ``torch.no_grad()`` (as in the
    reference code), so only the transform's parameters get a gradient. The loss
    is always computed, also for ``weight == 0`` (then it is exactly zero); a
    trainer that wants to save the inverse pass skips the call itself.

    Args:
        weight: The prototype weight ``lambda_p`` (published: 1 to 10), ``>= 0``.

    Example:
        >>> from nflows.distributions.normal import StandardNormal
        >>> from nflows.transforms.standard import IdentityTransform
        >>> flow = Flow(IdentityTransform(), StandardNormal([2]), embedding_net=torch.nn.Identity())
        >>> means = class_means(torch.tensor([[1.0, 1.0], [1.0, 3.0]]), torch.tensor([0, 1]), 2)
        >>> PrototypeLoss(weight=3.0)(flow, torch.eye(2), means)  # inverse(0) = 0 here
        tensor(9.)
    """

    def __init__(self, weight: float) -> None:
        self.weight = check_real("weight", weight, minimum=0.0)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(weight={self.weight})"

    def __call__(self, flow: Flow, seen_embeddings: Tensor, seen_means: Tensor) -> Tensor:
        """Compute the loss.

        Args:
            flow: The conditional ``nflows`` flow.
            seen_embeddings: Raw semantic vectors of the seen classes, shape ``[S, A]``.
            seen_means: Class centroids of the real seen features, shape ``[S, D]``
                (see :func:`class_means`), in the same class order.

        Returns:
            A scalar tensor.

        Raises:
            TypeError: If ``flow`` is not an ``nflows`` ``Flow``.
            ValueError: On mismatched shapes or non-finite inputs.
        """
        if not isinstance(flow, Flow):
            raise TypeError(f"Expected flow to be an nflows Flow, got {type(flow).__name__}.")
        seen_embeddings = check_matrix("seen_embeddings", seen_embeddings)
        seen_means = check_matrix("seen_means", seen_means, rows=seen_embeddings.shape[0])
        with torch.no_grad():
            context = flow._embedding_net(seen_embeddings)
        noise = torch.zeros_like(seen_means)
        prototypes, _ = flow._transform.inverse(noise, context=context)
        return self.weight * F.mse_loss(prototypes, seen_means)
