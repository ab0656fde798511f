"""Training GSMFlow: configs, presets, the step, the resumable trainer, model files."""

from gsmflow_nflows.training.checkpoint import CheckpointError
from gsmflow_nflows.training.config import (
    ABLATIONS,
    EvaluationConfig,
    FlowTrainingConfig,
    GSMFlowConfig,
    MiningConfig,
    ModelConfig,
)
from gsmflow_nflows.training.model_io import load_model, save_model
from gsmflow_nflows.training.presets import PAPER_PRESETS, generic_config, preset_config
from gsmflow_nflows.training.step import train_step
from gsmflow_nflows.training.trainer import GSMFlowTrainer

__all__ = [
    "ABLATIONS",
    "PAPER_PRESETS",
    "CheckpointError",
    "EvaluationConfig",
    "FlowTrainingConfig",
    "GSMFlowConfig",
    "GSMFlowTrainer",
    "MiningConfig",
    "ModelConfig",
    "generic_config",
    "load_model",
    "preset_config",
    "save_model",
    "train_step",
]
