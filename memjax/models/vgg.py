"""VGG-11/13 with BatchNorm for 32x32 (and 28x28) inputs, as in P4.

Stages: one per conv layer, `conv1 ... conv8` (VGG-11) or `conv1 ... conv10`
(VGG-13), each 3x3 conv -> BatchNorm -> ReLU, with a 2x2 'SAME' max-pool after
the convs the VGG configuration marks; then `fc`: flatten -> Dense to the
classes (the CIFAR variant's single linear classifier). Widths scale with
`width` (64 by default: 64, 128, 256, 512).
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from memjax.models.layers import ConvBN, DenseReLU
from memjax.models.stages import StagedModel

# Multipliers of `width`; 'M' = max-pool after the previous conv.
_CONFIGS = {
    'vgg11': (1, 'M', 2, 'M', 4, 4, 'M', 8, 8, 'M', 8, 8, 'M'),
    'vgg13': (1, 1, 'M', 2, 2, 'M', 4, 4, 'M', 8, 8, 'M', 8, 8, 'M'),
}


def vgg(name: str, num_classes: int, width: int = 64, dtype: Any = jnp.float32) -> StagedModel:
    """VGG-11 or VGG-13; `name` is a key of `_CONFIGS`."""
    layout = _CONFIGS[name]
    stages = []
    for i, item in enumerate(layout):
        if item == 'M':
            continue
        pooled = i + 1 < len(layout) and layout[i + 1] == 'M'
        stages.append((f'conv{len(stages) + 1}', ConvBN(item * width, pool=pooled, dtype=dtype)))
    stages.append(('fc', DenseReLU(num_classes, relu=False, dtype=dtype)))
    return StagedModel(name, tuple(stages), num_classes, dtype)
