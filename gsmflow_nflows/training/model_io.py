"""Save a trained GSMFlow with its config, and load it back into a ready flow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from nflows.flows.base import Flow

from gsmflow_nflows.data import GZSLData
from gsmflow_nflows.training.checkpoint import CheckpointError, save_checkpoint
from gsmflow_nflows.training.config import GSMFlowConfig
from gsmflow_nflows.training.flow_from_config import flow_from_config

MODEL_FORMAT = "gsmflow-model/1"


def save_model(
    path: str | Path, flow: Flow, config: GSMFlowConfig, data: GZSLData, *, fallback: bool = False
) -> None:
    """Write the flow's weights, its config and the dataset's class vectors (atomic write).

    With ``fallback``, a failed write keeps the model in the temporary folder and
    the ``WriteError`` says where (:func:`~gsmflow_nflows.atomic_write.write_with_fallback`).

    Example:
        >>> save_model("apy.pt", flow, config, data)  # doctest: +SKIP
    """
    save_checkpoint(
        path,
        {
            "kind": MODEL_FORMAT,
            "config": config.to_dict(),
            "dataset": data.name,
            "feature_dim": data.feature_dim,
            "seen_embeddings": data.seen_embeddings.cpu(),
            "unseen_embeddings": data.unseen_embeddings.cpu(),
            "seen_classes": data.seen_classes.cpu(),
            "unseen_classes": data.unseen_classes.cpu(),
            "class_names": list(data.class_names),
            **(
                {}
                if data.feature_shift is None or data.feature_scale is None
                else {
                    "feature_shift": data.feature_shift.cpu(),
                    "feature_scale": data.feature_scale.cpu(),
                }
            ),
            "flow": {k: v.cpu() for k, v in flow.state_dict().items()},
        },
        fallback=fallback,
    )


def load_model(
    path: str | Path, *, device: str | torch.device = "cpu"
) -> tuple[Flow, GSMFlowConfig, dict[str, Any]]:
    """Load a model written by :func:`save_model`.

    Returns:
        ``(flow, config, meta)``; ``meta`` holds ``dataset``, ``feature_dim``, the
        seen/unseen class ids and embeddings, and, for models saved since they were
        recorded, ``class_names`` and the loader's scaling (``feature_shift``,
        ``feature_scale``; absent for unscaled features).

    Raises:
        CheckpointError: the file is missing, unreadable or not a GSMFlow model.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such model file; train one with `gsmflow train`.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(
            f"{path}: not a readable model file ({type(error).__name__})."
        ) from None
    if not isinstance(state, dict) or state.get("kind") != MODEL_FORMAT:
        raise CheckpointError(f"{path}: not a GSMFlow model (written by `gsmflow train`).")
    config = GSMFlowConfig.from_dict(state["config"])
    seen = state["seen_embeddings"]
    placeholders: dict[str, Any] = {}  # of the saved shapes; load_state_dict fills them in
    if config.model.conditioning == "mean":
        placeholders["known_means"] = (seen, torch.zeros(len(seen), state["feature_dim"]))
    flow = flow_from_config(
        config.model,
        state["feature_dim"],
        torch.cat([seen, state["unseen_embeddings"]]),
        **placeholders,
    )
    try:
        flow.load_state_dict(state["flow"])
    except RuntimeError:
        raise CheckpointError(f"{path}: weights do not match the saved config.") from None
    flow.eval()
    meta = {key: state[key] for key in state if key not in ("flow", "config", "format", "kind")}
    return flow.to(device), config, meta
