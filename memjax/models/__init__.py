"""Staged models: `build_model(name, num_classes, ...)` returns a `StagedModel`."""

from memjax.models.registry import MODEL_NAMES, build_model, model_from_config
from memjax.models.stages import StagedModel, StageRun

__all__ = ['MODEL_NAMES', 'build_model', 'model_from_config', 'StagedModel', 'StageRun']
