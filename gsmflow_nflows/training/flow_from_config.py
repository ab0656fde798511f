"""The one adapter from a :class:`ModelConfig` (and the data it is fitted on) to a flow."""

from __future__ import annotations

from typing import Any

import torch
from nflows.flows.base import Flow
from torch import Tensor

from gsmflow_nflows.data import GZSLData
from gsmflow_nflows.losses import class_means
from gsmflow_nflows.model import build_gsmflow
from gsmflow_nflows.semantic_mean import fit_ridge_map, residual_scale, residual_shrinkage
from gsmflow_nflows.training.config import ModelConfig

__all__ = ["fit_semantic_mean", "flow_from_config"]


def fit_semantic_mean(model: ModelConfig, data: GZSLData) -> dict[str, Any]:
    """The fitted parts of a mean-conditioned flow, from the real training features.

    For ``model.conditioning == "mean"``: the ridge map of the seen class means,
    the known (seen) class means, and with ``scale_residual`` the residual's
    scale (and with ``shrink_residual`` its shrinkage); ``{}`` for the
    paper's ``"couplings"`` conditioning.

    Returns:
        Keyword arguments for :func:`flow_from_config`.

    Example:
        >>> fit_semantic_mean(ModelConfig(conditioning="couplings"), data)  # doctest: +SKIP
        {}
    """
    if model.conditioning != "mean":
        return {}
    means = class_means(data.train_features.double(), data.train_labels, data.num_seen)
    fitted: dict[str, Any] = {
        "semantic_mean": fit_ridge_map(data.seen_embeddings, means, alpha=model.mean_ridge_alpha),
        "known_means": (data.seen_embeddings, means),
    }
    if model.scale_residual:
        scale = residual_scale(data.train_features, data.train_labels, data.num_seen)
        fitted["semantic_scale"] = scale
        if model.shrink_residual:
            fitted["semantic_shrinkage"] = residual_shrinkage(
                data.train_features, data.train_labels, data.num_seen, scale
            )
    return fitted


def flow_from_config(
    model: ModelConfig,
    feature_dim: int,
    class_embeddings: Tensor,
    *,
    generator: torch.Generator | None = None,
    **fitted: Any,
) -> Flow:
    """:func:`~gsmflow_nflows.build_gsmflow` with the shape ``model`` describes.

    Args:
        model: The flow's shape.
        feature_dim: ``D``.
        class_embeddings: ``[C, A]`` class vectors of every class (seen, then unseen).
        generator: Source of the initialisation.
        **fitted: What :func:`fit_semantic_mean` returned (or placeholders of its
            shapes, when saved weights are loaded next).

    Returns:
        The flow, on the embeddings' device.

    Example:
        >>> flow = flow_from_config(config.model, data.feature_dim, embeddings)  # doctest: +SKIP
    """
    return build_gsmflow(
        feature_dim,
        class_embeddings,
        num_blocks=model.num_blocks,
        hidden_features=model.hidden_features,
        semantic_features=model.semantic_features,
        clamp=model.clamp,
        permutation=model.permutation,
        relative_positioning=model.relative_positioning,
        conditioning=model.conditioning,
        generator=generator,
        **fitted,
    )
