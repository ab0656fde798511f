"""The relative positioning encoder: GSMFlow's semantic embedding of class vectors.

References:
    Chen et al., "GSMFlow: Generation Shifts Mitigating Flow for Generalized
    Zero-Shot Learning", IEEE Transactions on Multimedia, 2022 ("relative
    positioning", the GS module).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gsmflow_nflows._checks import check_int, check_matrix
from gsmflow_nflows.context_groups import ContextGroups


def select_anchors(class_embeddings: Tensor) -> Tensor:
    """Indices of GSMFlow's three anchor classes: ``[min, max, median]`` row sum.

    With ``M`` the matrix of pairwise cosine similarities of the class vectors,
    the anchors are the class with the smallest row sum of ``M``, the class with
    the largest, and the class at index ``floor(C / 2)`` of the ascending
    (stably) sorted row sums. Ties go to the lowest class index.

    Args:
        class_embeddings: ``[C, A]`` semantic vectors of ALL classes, ``C >= 3``,
            finite, no zero rows.

    Returns:
        A ``LongTensor`` of shape ``[3]``: the minimum, maximum and median anchors.

    Example:
        >>> select_anchors(torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [1.0, 1.0]]))
        tensor([2, 3, 1])
    """
    check_matrix("class_embeddings", class_embeddings)
    num_classes = class_embeddings.shape[0]
    if num_classes < 3:
        raise ValueError(
            f"Expected at least 3 classes to pick relative-positioning anchors, got {num_classes}."
        )
    norms = class_embeddings.norm(dim=1)
    if bool((norms == 0).any()):
        zero_rows = torch.nonzero(norms == 0).flatten().tolist()
        raise ValueError(
            f"class_embeddings rows {zero_rows} are all zero; cosine similarity is undefined "
            "for them. Remove those classes or fix their semantic vectors."
        )
    unit = class_embeddings / norms[:, None]
    row_sums = (unit @ unit.T).sum(dim=1)
    ascending = torch.sort(row_sums, stable=True).indices
    return torch.stack([ascending[0], torch.argmax(row_sums), ascending[num_classes // 2]])


class RelativePositioningEncoder(nn.Module):
    """Maps raw class vectors ``a`` to ``h(a) = sum_k ReLU(W_k (a - v_k) + b_k)``.

    The anchors ``v_k`` are fixed class vectors (buffers, see
    :func:`select_anchors`); the three linear maps are trained jointly with the
    flow. Used as the ``embedding_net`` of an nflows ``Flow``, so the flow takes
    raw class embeddings as its context.

    Args:
        anchors: ``[3, A]`` anchor class vectors (any number >= 1 of anchors works;
            the paper uses 3).
        out_features: width of ``h`` (1024 in the paper).
        groups: the grouping shared with the flow's coupling nets. When given,
            each distinct class in a batch is encoded once and the nets are told
            which rows are equal (same values and gradients, less work).

    Example:
        >>> classes = torch.randn(10, 6)
        >>> encoder = RelativePositioningEncoder.from_class_embeddings(classes, out_features=16)
        >>> encoder(classes[:4]).shape
        torch.Size([4, 16])
    """

    anchors: Tensor

    def __init__(
        self, anchors: Tensor, out_features: int = 1024, *, groups: ContextGroups | None = None
    ) -> None:
        super().__init__()
        check_matrix("anchors", anchors)
        if anchors.shape[0] == 0:
            raise ValueError("Expected at least one anchor class vector, got none.")
        check_int("out_features", out_features, minimum=1)
        self.in_features = anchors.shape[1]
        self.out_features = out_features
        self.groups = groups
        self.register_buffer("anchors", anchors.detach().clone())
        self.anchor_layers = nn.ModuleList(
            nn.Linear(self.in_features, out_features) for _ in range(anchors.shape[0])
        )

    @classmethod
    def from_class_embeddings(
        cls,
        class_embeddings: Tensor,
        out_features: int = 1024,
        *,
        groups: ContextGroups | None = None,
    ) -> RelativePositioningEncoder:
        """Build the encoder with anchors picked from all class vectors (:func:`select_anchors`).

        Args:
            class_embeddings: ``[C, A]`` semantic vectors of all classes (seen and unseen).
            out_features: width of ``h``.
            groups: see the class docstring.

        Returns:
            The encoder, on the device and dtype of ``class_embeddings``.
        """
        anchors = class_embeddings[select_anchors(class_embeddings)]
        encoder = cls(anchors, out_features, groups=groups)
        return encoder.to(device=class_embeddings.device, dtype=class_embeddings.dtype)

    def forward(self, class_embeddings: Tensor) -> Tensor:
        check_matrix(
            "class embeddings (the flow's context)", class_embeddings, columns=self.in_features
        )
        grouping = self.groups(class_embeddings) if self.groups is not None else None
        if grouping is None:
            embedding = self._encode(class_embeddings)
        else:
            first, inverse = grouping
            per_class = self._encode(class_embeddings.index_select(0, first))
            if per_class.shape[0] == 1:
                embedding = per_class.expand(class_embeddings.shape[0], -1)
            else:
                embedding = per_class.index_select(0, inverse)
        if self.groups is not None:
            self.groups.remember(embedding, grouping)
        return embedding

    def _encode(self, class_embeddings: Tensor) -> Tensor:
        embedding: Tensor | None = None
        for anchor, layer in zip(self.anchors, self.anchor_layers, strict=True):
            term = torch.relu(layer(class_embeddings - anchor))
            embedding = term if embedding is None else embedding + term
        assert embedding is not None  # __init__ requires at least one anchor
        return embedding

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"anchors={self.anchors.shape[0]}"
        )
