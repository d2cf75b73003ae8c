"""Building blocks shared by the architectures (PyTorch-equivalent defaults).

All modules take `x: [B, H, W, C]` (or `[B, D]`, `[B, T, D]` where stated) and
`train: bool`; BatchNorm momentum 0.9 and epsilon 1e-5 match PyTorch's
`momentum=0.1, eps=1e-5`. BatchNorm is never given an `axis_name`, so its
statistics are per replica under `jax.vmap`.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

# Module classes that are "layers" (P1's and P3's unit of analysis): a conv with
# its BatchNorm, a linear layer, a ViT patch embedding or block. A layer's path
# name is its stage's name followed by its path inside the stage
# (`layer1.0.conv_bn1`), or the stage's name when the stage is the layer itself
# (`stem`, `conv1`, `fc2`). `memjax.models.layer_index` finds them.
LAYER_TYPES: set[type] = set()


def layer_module(cls: type) -> type:
    """Class decorator: instances of `cls` are layers (see LAYER_TYPES)."""
    LAYER_TYPES.add(cls)
    return cls


# torchvision's ResNet/VGG initialisation: kaiming normal, fan_out, relu gain.
conv_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')


def batch_norm(train: bool, dtype: Any, name: str | None = None, scale_init=nn.initializers.ones):
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                        dtype=dtype, scale_init=scale_init, name=name)


def max_pool(x, window: int = 2, padding: str = 'SAME'):
    """Max pooling `[B, H, W, C] -> [B, ceil(H/2), ceil(W/2), C]` ('SAME' padding
    keeps odd sizes such as 7 -> 4, so 28x28 inputs survive deep pooling)."""
    return nn.max_pool(x, (window, window), strides=(window, window), padding=padding)


@layer_module
class ConvBN(nn.Module):
    """Conv (no bias) -> BatchNorm -> optional ReLU -> optional 2x2 max-pool
    (`pool_padding` 'SAME' rounds odd sizes up, 'VALID' down as PyTorch's MaxPool2d)."""

    features: int
    kernel: int = 3
    stride: int = 1
    padding: Any = 'SAME'
    relu: bool = True
    pool: bool = False
    pool_padding: str = 'SAME'
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(self.features, (self.kernel, self.kernel), strides=self.stride,
                    padding=self.padding, use_bias=False, dtype=self.dtype,
                    kernel_init=conv_init, name='conv')(x)
        x = batch_norm(train, self.dtype, name='bn')(x)
        if self.relu:
            x = nn.relu(x)
        if self.pool:
            x = max_pool(x, padding=self.pool_padding)
        return x


@layer_module
class DenseReLU(nn.Module):
    """Flatten (if needed) -> Dense -> optional ReLU: `[B, ...] -> [B, features]`."""

    features: int
    relu: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        del train
        x = x.reshape((x.shape[0], -1))
        x = nn.Dense(self.features, dtype=self.dtype, name='dense')(x)
        return nn.relu(x) if self.relu else x


@layer_module
class Linear(nn.Dense):
    """A Dense that is a layer of its own (the classifier inside a head stage: `head.dense`)."""


class PoolDense(nn.Module):
    """Classifier head: global pooling over H, W -> Dense: `[B, H, W, C] -> [B, K]`.

    Attributes:
      pooling: 'avg' (ResNets) or 'max' (ResNet-9).
      scale: multiplies the logits (P3's ResNet-9: 0.2).
      use_bias: the linear layer's bias (P3's ResNet-9 has none).
    """

    num_classes: int
    pooling: str = 'avg'
    scale: float = 1.0
    use_bias: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        del train
        if x.ndim == 4:
            x = jnp.max(x, axis=(1, 2)) if self.pooling == 'max' else jnp.mean(x, axis=(1, 2))
        x = Linear(self.num_classes, use_bias=self.use_bias, dtype=self.dtype, name='dense')(x)
        return x * self.scale if self.scale != 1.0 else x
