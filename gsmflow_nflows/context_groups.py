"""Find the distinct rows of a context batch, so per-class work is done once per class.

A GSMFlow batch holds few distinct classes (about 20 in a training batch of
200, exactly one in a sampling batch), and the class embedding enters each
coupling network's first layer linearly. Computing that part once per distinct
row and gathering is exactly the same mathematics for a quarter of the
coupling networks' FLOPs.
"""

from __future__ import annotations

import weakref

import torch
from torch import Tensor, nn


class ContextGroups:
    """Groups equal rows of a context batch; shared by the encoder and nets of one flow.

    Grouping is exact: rows are compared bit for bit, and a batch with few
    repeats is left ungrouped. For the gradients to stay exact too, grouped rows
    must share one upstream source, so a context that requires grad is grouped
    only when its producer said so with :meth:`remember` (the
    :class:`~gsmflow_nflows.semantic.RelativePositioningEncoder` does, after
    encoding each distinct class once). Contexts that need no gradient (sampling,
    constant contexts) are grouped directly. The last remembered tensor is kept
    by weak reference, so one flow call groups once, not once per network.

    Args:
        max_fraction: group only when the distinct rows are at most this
            fraction of the batch; otherwise grouping saves too little.

    Example:
        >>> groups = ContextGroups()
        >>> context = torch.tensor([[1.0, 2.0], [1.0, 2.0], [3.0, 4.0], [1.0, 2.0]])
        >>> first, inverse = groups(context)
        >>> first.tolist(), inverse.tolist()
        ([0, 2], [0, 0, 1, 0])
    """

    def __init__(self, max_fraction: float = 0.5) -> None:
        self.max_fraction = max_fraction
        self._last: weakref.ref[Tensor] | None = None
        self._last_version = -1
        self._last_result: tuple[Tensor, Tensor] | None = None

    def __getstate__(self) -> dict[str, object]:
        """Pickle (``torch.save`` of a whole flow, ``copy.deepcopy``) without the cache.

        The cache holds a weak reference, which cannot be pickled, and is only
        valid within one flow call anyway; the copy regroups on its next call.
        """
        state = self.__dict__.copy()
        state.update(_last=None, _last_version=-1, _last_result=None)
        return state

    def __call__(self, context: Tensor) -> tuple[Tensor, Tensor] | None:
        """Return ``(first, inverse)`` with ``context == context[first][inverse]``, or ``None``.

        ``first`` indexes one representative row per distinct row, in order of
        first appearance; ``inverse`` maps every row to its representative.
        ``None`` means: not worth grouping, or not provably safe for gradients.
        """
        if torch.compiler.is_compiling() or context.dim() != 2 or context.shape[0] < 2:
            return None
        if (
            not context.is_inference()
            and self._last is not None
            and self._last() is context
            and self._last_version == context._version
        ):
            return self._last_result
        if context.requires_grad:
            return None
        return self._group(context)

    def remember(self, context: Tensor, grouping: tuple[Tensor, Tensor] | None) -> None:
        """Record that the rows of ``context`` were built as ``source[inverse]``."""
        if context.is_inference():  # no version counter: in-place edits undetectable
            return
        self._last = weakref.ref(context)
        self._last_version = context._version
        self._last_result = grouping

    def _group(self, context: Tensor) -> tuple[Tensor, Tensor] | None:
        rows = context.shape[0]
        if context.stride(0) == 0:  # an expanded single row: one group
            zeros = torch.zeros(rows, dtype=torch.long, device=context.device)
            return zeros[:1], zeros
        _, inverse = torch.unique(context.detach(), dim=0, return_inverse=True)
        num_groups = int(inverse.max()) + 1
        if num_groups > self.max_fraction * rows:
            return None
        positions = torch.arange(rows, device=context.device)
        first = torch.full((num_groups,), rows, dtype=torch.long, device=context.device)
        first.scatter_reduce_(0, inverse, positions, reduce="amin")
        # Renumber the groups by first appearance so the order is deterministic.
        order = torch.argsort(first)
        rank = torch.empty_like(order)
        rank[order] = torch.arange(num_groups, device=context.device)
        return first[order], rank[inverse]


def grouped_linear(layer: nn.Linear, context: Tensor, groups: ContextGroups | None) -> Tensor:
    """Apply ``layer`` to every row of ``context``, computing each distinct row once.

    Returns a tensor broadcastable to ``layer(context)`` (``[1, out]`` when all
    rows are equal, else ``[batch, out]``) holding the same values up to
    floating-point rounding; gradients flow to ``layer`` and ``context`` as usual.
    """
    grouping = groups(context) if groups is not None else None
    if grouping is None:
        return layer(context)
    first, inverse = grouping
    per_group = layer(context.index_select(0, first))
    if per_group.shape[0] == 1:
        return per_group
    return per_group.index_select(0, inverse)
