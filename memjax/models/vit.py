"""ViT-small for small images (patch 4), as in P3.

Stages: `embed` (patch embedding, class token, learned position embedding:
`[B, H, W, C] -> [B, T+1, D]` with T = (H/p)(W/p)), `block1 ... block{depth}`
(pre-LayerNorm transformer blocks, `[B, T+1, D] -> [B, T+1, D]`), and `head`
(LayerNorm, class token, Dense: `-> [B, K]`). ViT-small: D = 384, depth 12,
6 heads, MLP 4D. Inputs whose side is not a multiple of p are zero-padded up.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from memjax.models.layers import layer_module
from memjax.models.stages import StagedModel


@layer_module
class PatchEmbed(nn.Module):
    patch: int
    dim: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        del train
        b, h, w, _ = x.shape
        ph, pw = -h % self.patch, -w % self.patch
        if ph or pw:
            x = jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)))
        x = nn.Conv(self.dim, (self.patch, self.patch), strides=self.patch, dtype=self.dtype,
                    name='patch')(x)
        x = x.reshape((b, -1, self.dim))
        cls = self.param('cls', nn.initializers.zeros, (1, 1, self.dim))
        x = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, self.dim)).astype(x.dtype), x], axis=1)
        pos = self.param('pos', nn.initializers.normal(0.02), (1, x.shape[1], self.dim))
        return x + pos.astype(x.dtype)


@layer_module
class TransformerBlock(nn.Module):
    dim: int
    heads: int
    mlp_ratio: int = 4
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        del train
        y = nn.LayerNorm(dtype=self.dtype, name='ln1')(x)
        y = nn.MultiHeadDotProductAttention(num_heads=self.heads, dtype=self.dtype, name='attn')(y, y)
        x = x + y
        y = nn.LayerNorm(dtype=self.dtype, name='ln2')(x)
        y = nn.Dense(self.mlp_ratio * self.dim, dtype=self.dtype, name='mlp1')(y)
        y = nn.Dense(self.dim, dtype=self.dtype, name='mlp2')(nn.gelu(y))
        return x + y


@layer_module
class ClassTokenHead(nn.Module):
    num_classes: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        del train
        x = nn.LayerNorm(dtype=self.dtype, name='ln')(x)[:, 0]
        return nn.Dense(self.num_classes, dtype=self.dtype, name='dense')(x)


def vit(num_classes: int, width: int = 384, depth: int = 12, heads: int = 6, patch: int = 4,
        dtype: Any = jnp.float32) -> StagedModel:
    """ViT with embedding dimension `width`; ViT-small by default."""
    stages = [('embed', PatchEmbed(patch, width, dtype=dtype))]
    stages += [(f'block{i + 1}', TransformerBlock(width, heads, dtype=dtype)) for i in range(depth)]
    stages.append(('head', ClassTokenHead(num_classes, dtype=dtype)))
    return StagedModel('vit_small', tuple(stages), num_classes, dtype)
