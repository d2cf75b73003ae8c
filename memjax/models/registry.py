"""Model names -> constructors, with one clear error for unknown names."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from memjax.errors import ConfigError
from memjax.models.cnn import cnn
from memjax.models.resnet import resnet, resnet9, resnet32
from memjax.models.stages import StagedModel
from memjax.models.vgg import vgg
from memjax.models.vit import vit, vit_small

# name -> (constructor(num_classes, width, dtype, **extra), default width)
_MODELS = {
    'cnn': (cnn, 32),
    'resnet9': (resnet9, 64),
    'resnet18': (lambda k, w, d: resnet('resnet18', k, w, d), 64),
    'resnet34': (lambda k, w, d: resnet('resnet34', k, w, d), 64),
    'resnet50': (lambda k, w, d: resnet('resnet50', k, w, d), 64),
    'resnet32': (resnet32, 16),
    'vgg11': (lambda k, w, d: vgg('vgg11', k, w, d), 64),
    'vgg13': (lambda k, w, d: vgg('vgg13', k, w, d), 64),
    'vit': (vit, 384),
    'vit_small': (vit_small, 512),   # P3's ViT (Maini et al. 2023), see memjax.models.vit
}
_VITS = ('vit', 'vit_small')
MODEL_NAMES = tuple(_MODELS)

_DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


def compute_dtype(name: str) -> Any:
    if name not in _DTYPES:
        raise ConfigError(f"unknown model.dtype {name!r}; use one of: {', '.join(_DTYPES)}")
    return _DTYPES[name]


def build_model(name: str, num_classes: int, width: int | None = None,
                dtype: str = 'float32', **vit_options: Any) -> StagedModel:
    """Builds a registered architecture.

    Args:
      name: one of `MODEL_NAMES`.
      num_classes: output size K.
      width: base width (channels of the first stage; embedding size for ViT);
        None for the architecture's default.
      dtype: compute dtype name, 'float32' or 'bfloat16'.
      **vit_options: `depth`, `heads`, `patch` for `vit` and `vit_small` (ignored if None:
        the architecture's default; `vit_small` 6, 8, 2, `vit` 12, 6, 4).
    """
    if name not in _MODELS:
        raise ConfigError(f"unknown model.name {name!r}; use one of: {', '.join(MODEL_NAMES)}")
    if num_classes < 2:
        raise ConfigError(f"num_classes={num_classes} must be at least 2")
    constructor, default_width = _MODELS[name]
    width = default_width if width is None else int(width)
    if width < 1:
        raise ConfigError(f"model.width={width} must be a positive integer (or None for the default)")
    if name in _VITS:
        extra = {k: v for k, v in vit_options.items() if v is not None}
        return constructor(num_classes, width, dtype=compute_dtype(dtype), **extra)
    return constructor(num_classes, width, compute_dtype(dtype))


def model_from_config(model_config, num_classes: int) -> StagedModel:
    """The model a config's `model` node describes."""
    m = model_config
    return build_model(m.name, num_classes, m.width, m.dtype, depth=m.depth, heads=m.heads, patch=m.patch)
