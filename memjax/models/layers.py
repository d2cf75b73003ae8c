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

# torchvision's ResNet/VGG initialisation: kaiming normal, fan_out, relu gain.
conv_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')


def batch_norm(train: bool, dtype: Any, name: str | None = None, scale_init=nn.initializers.ones):
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                        dtype=dtype, scale_init=scale_init, name=name)


def max_pool(x, window: int = 2, padding: str = 'SAME'):
    """Max pooling `[B, H, W, C] -> [B, ceil(H/2), ceil(W/2), C]` ('SAME' padding
    keeps odd sizes such as 7 -> 4, so 28x28 inputs survive deep pooling)."""
    return nn.max_pool(x, (window, window), strides=(window, window), padding=padding)


class ConvBN(nn.Module):
    """Conv (no bias) -> BatchNorm -> optional ReLU -> optional 2x2 max-pool."""

    features: int
    kernel: int = 3
    stride: int = 1
    padding: Any = 'SAME'
    relu: bool = True
    pool: bool = False
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
            x = max_pool(x)
        return x


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


class PoolDense(nn.Module):
    """Classifier head: global pooling over H, W -> Dense: `[B, H, W, C] -> [B, K]`.

    Attributes:
      pooling: 'avg' (ResNets) or 'max' (ResNet-9).
      scale: multiplies the logits (ResNet-9 uses 0.125).
    """

    num_classes: int
    pooling: str = 'avg'
    scale: float = 1.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        del train
        if x.ndim == 4:
            x = jnp.max(x, axis=(1, 2)) if self.pooling == 'max' else jnp.mean(x, axis=(1, 2))
        x = nn.Dense(self.num_classes, dtype=self.dtype, name='dense')(x)
        return x * self.scale if self.scale != 1.0 else x
