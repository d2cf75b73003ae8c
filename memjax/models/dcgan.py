"""DCGAN (Radford, Metz & Chintala, ICLR 2016): the generator that regularises P4's
activation maximisation.

Generator: `z [B, latent] -> images [B, H, W, C]` in [-1, 1]. A projection
(Dense, equal to PyTorch's 4x4 transposed conv on a 1x1 input) to
`[B, H/2^u, W/2^u, w 2^(u-1)]`, BatchNorm, ReLU, then `u` transposed convs (kernel 4,
stride 2) halving the width, each with BatchNorm + ReLU except the last, which
outputs C channels with tanh. `u = 3` for sides divisible by 8 (32x32: 4x4x256 ->
8x8x128 -> 16x16x64 -> 32x32x3 with w = 64: four transposed-conv layers as P4),
`u = 2` for 28x28 (7x7x128 -> 14x14x64 -> 28x28x1).

Discriminator: `images [B, H, W, C] -> logits [B]`: `u` strided 4x4 convs (widths
w, 2w, 4w ...) with LeakyReLU(0.2), BatchNorm on all but the first, then a dense
layer to one logit (equal to a conv whose kernel covers the final map).

Initialisation as Radford et al.: conv and dense weights N(0, 0.02), BatchNorm
scales N(1, 0.02), biases and BatchNorm offsets 0. BatchNorm uses PyTorch's
momentum 0.1 / eps 1e-5 (`memjax.models.layers.batch_norm`); `train=True` uses
batch statistics (GAN training), `train=False` the running averages (a trained
generator used as a fixed map: each z gives its image independently of the
rest of the batch, which activation maximisation relies on).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from memjax.errors import ConfigError
from memjax.models.layers import batch_norm

weight_init = nn.initializers.normal(0.02)


def bn_scale_init(key, shape, dtype=jnp.float32):
    """BatchNorm scale ~ N(1, 0.02)."""
    return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


def upsamplings(image_shape: Sequence[int]) -> int:
    """Number of stride-2 layers for `(H, W, C)`: 3 if H and W divide by 8, 2 if by 4."""
    h, w = image_shape[:2]
    for u in (3, 2):
        if h % 2 ** u == 0 and w % 2 ** u == 0:
            return u
    raise ConfigError(f"DCGAN needs image sides divisible by 4 (e.g. 28 or 32); got {tuple(image_shape)}")


class Generator(nn.Module):
    """`z [B, latent_dim] -> images [B, H, W, C]` in [-1, 1] (see module docstring).

    Attributes:
      image_shape: `(H, W, C)`.
      width: channels of the layer before the output (64 in Radford et al.).
    """

    image_shape: tuple
    width: int = 64
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, z, train: bool = False):
        h, w, c = self.image_shape
        u = upsamplings(self.image_shape)
        base_h, base_w = h // 2 ** u, w // 2 ** u
        features = self.width * 2 ** (u - 1)
        x = nn.Dense(base_h * base_w * features, use_bias=False, dtype=self.dtype,
                     kernel_init=weight_init, name='project')(z)
        x = x.reshape((z.shape[0], base_h, base_w, features))
        x = nn.relu(batch_norm(train, self.dtype, name='bn0', scale_init=bn_scale_init)(x))
        for i in range(1, u + 1):
            last = i == u
            features = c if last else features // 2
            x = nn.ConvTranspose(features, (4, 4), strides=(2, 2), padding='SAME', use_bias=last,
                                 dtype=self.dtype, kernel_init=weight_init, name=f'deconv{i}')(x)
            if last:
                x = jnp.tanh(x)
            else:
                x = nn.relu(batch_norm(train, self.dtype, name=f'bn{i}', scale_init=bn_scale_init)(x))
        return x.astype(jnp.float32)


class Discriminator(nn.Module):
    """`images [B, H, W, C]` in [-1, 1] -> real/fake logits `[B]` (see module docstring)."""

    image_shape: tuple
    width: int = 64
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        u = upsamplings(self.image_shape)
        x = x.astype(self.dtype)
        for i in range(u):
            x = nn.Conv(self.width * 2 ** i, (4, 4), strides=(2, 2), padding='SAME', use_bias=i == 0,
                        dtype=self.dtype, kernel_init=weight_init, name=f'conv{i + 1}')(x)
            if i > 0:
                x = batch_norm(train, self.dtype, name=f'bn{i + 1}', scale_init=bn_scale_init)(x)
            x = nn.leaky_relu(x, 0.2)
        x = x.reshape((x.shape[0], -1))
        x = nn.Dense(1, dtype=self.dtype, kernel_init=weight_init, name='logit')(x)
        return x[:, 0].astype(jnp.float32)


def dcgan(image_shape: Sequence[int], width: int = 64,
          dtype: Any = jnp.float32) -> tuple[Generator, Discriminator]:
    """The generator and discriminator for images of shape `(H, W, C)`."""
    shape = tuple(int(s) for s in image_shape)
    if len(shape) != 3:
        raise ConfigError(f"image_shape must be (H, W, C); got {tuple(image_shape)}")
    upsamplings(shape)
    return Generator(shape, width, dtype), Discriminator(shape, width, dtype)
