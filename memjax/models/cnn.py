"""The small CNN of P2 (SVHN): three conv layers and four fully connected layers.

Stages: `conv1, conv2, conv3` (3x3 conv -> BatchNorm -> ReLU -> 2x2 max-pool,
widths w, 2w, 4w) and `fc1, fc2, fc3, fc4` (fc1..fc3: Dense -> ReLU with widths
8w, 4w, 2w; fc4: Dense to the classes). The paper gives no widths; w = 32 is
the default. On 32x32x3 inputs the stage outputs are [B,16,16,w], [B,8,8,2w],
[B,4,4,4w], [B,8w], [B,4w], [B,2w], [B,K]; on 28x28x1, 14, 7 and 4 pixels.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from memjax.models.layers import ConvBN, DenseReLU
from memjax.models.stages import StagedModel


def cnn(num_classes: int, width: int = 32, dtype: Any = jnp.float32) -> StagedModel:
    stages = (
        ('conv1', ConvBN(width, pool=True, dtype=dtype)),
        ('conv2', ConvBN(2 * width, pool=True, dtype=dtype)),
        ('conv3', ConvBN(4 * width, pool=True, dtype=dtype)),
        ('fc1', DenseReLU(8 * width, dtype=dtype)),
        ('fc2', DenseReLU(4 * width, dtype=dtype)),
        ('fc3', DenseReLU(2 * width, dtype=dtype)),
        ('fc4', DenseReLU(num_classes, relu=False, dtype=dtype)),
    )
    return StagedModel('cnn', stages, num_classes, dtype)
