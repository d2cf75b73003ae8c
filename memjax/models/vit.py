"""Vision transformers for small images: P3's `vit_small` and a standard `vit`.

`vit_small` is the ViT of Maini et al. (ICML 2023, "Can Neural Network
Memorization Be Localized?"; code pratyushmaini/localizing-memorization,
models/vit_small.py, itself lucidrains' vit_for_small_dataset), built there by
`get_vit` as ViT(image_size=32, patch_size=2, dim=512, depth=6, heads=8,
mlp_dim=512, dropout=0.1, emb_dropout=0.1), dim_head=64, pool='cls':

- `embed` (`ShiftedPatchEmbed`, `[B, H, W, C] -> [B, T+1, D]`, T = (H/p)(W/p)):
  Shifted Patch Tokenization: the image concatenated on the channel axis with
  its four copies shifted by one pixel (right, left, down, up; zeros enter),
  `[B, H, W, 5C]`, cut into p x p patches flattened in (row, column, channel)
  order, `[B, T, 5Cp^2]`, LayerNorm, Linear to D; then the class token is
  prepended, the position embedding added (both initialised standard normal)
  and embedding dropout applied;
- `block1 ... block{depth}` (`LSABlock`, `[B, T+1, D] -> [B, T+1, D]`):
  pre-LayerNorm blocks `x + LSA(LN(x))`, then `x + FF(LN(x))`. Locality
  Self-Attention: q, k, v from one Linear without bias (`D -> 3 * heads *
  dim_head`), scores `q k^T * exp(t)` with a learnable log-temperature t
  (initialised log(dim_head^-0.5)), the diagonal masked (a token never attends
  to itself), softmax, Linear back to D with bias, dropout (no dropout on the
  attention weights). FF: Linear D -> mlp_dim, exact (erf) GELU, dropout,
  Linear mlp_dim -> D, dropout;
- `head` (`CLSHead`, `-> [B, K]`): LayerNorm and Linear on the class token.

As in PyTorch: LayerNorm epsilon 1e-5 (two-pass variance); Linear weights and
biases uniform in +-1/sqrt(fan_in); LayerNorm scale 1, bias 0.

These stages are P3's ViT layer groups (experiments/layer_groups.py): group 0
= patch embedding (`embed`), groups 1-6 = transformer layers (`block1..6`),
group 7 = mlp_head (`head`); `model.units('p3_groups')` gives exactly these
eight. Two differences from their lists: their group 0 also names
`transformer.layers.0.0.norm.weight` (the first block's attention LayerNorm
scale, accidentally, as it is in group 1 too) -- here it belongs to `block1`
only; and their `pos_embedding` and `cls_token` are in no group -- here they
belong to `embed`.

Dropout (rate `dropout` in the blocks, `emb_dropout` after the embedding, 0.1
each) is active only when a stage runs with `train=True` AND a 'dropout' PRNG
key is given (`StagedModel.apply(..., rng=key)`, which folds in the stage's
index); the training step passes a key derived from the replica's data key,
the epoch and the step (`memjax.data.pipeline.dropout_key`). `train=False`
never drops; `train=True` without a key runs without dropout (analyses that
run training mode without a key: see `StagedModel.apply`).

Differences from the authors' model that remain: the classifier has K outputs
for the data set's K classes (their `get_vit` passes num_classes=10 whatever
the data set); an image side that is not a multiple of p is zero-padded up
(they assert divisibility; 28 and 32 with p=2 divide anyway). With a `width`
other than 512, mlp_dim follows the width (theirs: mlp_dim = dim = 512).

`vit` is a standard ViT (patch 4, D=384, depth 12, 6 heads, MLP 4D, Conv patch
embedding, zero class token, position embedding N(0, 0.02), Flax's
LayerNorm/Dense defaults, tanh GELU, no dropout), with the same stage names.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from memjax.models.layers import layer_module
from memjax.models.stages import StagedModel

LN_EPS = 1e-5  # torch.nn.LayerNorm's default


# Shared pieces -----------------------------------------------------------------
def pad_to_multiple(x: jax.Array, patch: int) -> jax.Array:
    """Zero-pads `[B, H, W, C]` at the bottom/right up to sides divisible by `patch`."""
    ph, pw = -x.shape[1] % patch, -x.shape[2] % patch
    return jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0))) if ph or pw else x


def shifted_copies(x: jax.Array) -> jax.Array:
    """`[B, H, W, C] -> [B, H, W, 5C]`: x, then x shifted one pixel right, left, down, up
    (channel blocks in that order; the pixel that enters is 0). Shifted right means
    out[:, h, w] = x[:, h, w - 1], as their `F.pad(x, (1, -1, 0, 0))` on NCHW."""
    def pad(axis: int, widths: tuple[int, int]) -> jax.Array:
        return jnp.pad(x, [widths if a == axis else (0, 0) for a in range(4)])

    right = pad(2, (1, 0))[:, :, :-1]
    left = pad(2, (0, 1))[:, :, 1:]
    down = pad(1, (1, 0))[:, :-1]
    up = pad(1, (0, 1))[:, 1:]
    return jnp.concatenate([x, right, left, down, up], axis=-1)


def patchify(x: jax.Array, patch: int) -> jax.Array:
    """`[B, H, W, C] -> [B, (H/p)(W/p), p*p*C]`: patches in row-major order, each flattened
    as (row in patch, column in patch, channel) -- einops 'b c (h p1) (w p2) -> b (h w) (p1 p2 c)'."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // patch, patch, w // patch, patch, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // patch) * (w // patch), patch * patch * c)


def torch_dense(features: int, fan_in: int, use_bias: bool = True, dtype: Any = jnp.float32,
                name: str | None = None) -> nn.Dense:
    """A Dense initialised as torch.nn.Linear: weight and bias uniform in +-1/sqrt(fan_in)."""
    bound = 1.0 / math.sqrt(fan_in)

    def bias_init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return nn.Dense(features, use_bias=use_bias, dtype=dtype, name=name, bias_init=bias_init,
                    kernel_init=nn.initializers.variance_scaling(1.0 / 3.0, 'fan_in', 'uniform'))


def torch_layer_norm(dtype: Any, name: str | None = None) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=LN_EPS, use_fast_variance=False, dtype=dtype, name=name)


def dropout(module: nn.Module, rate: float, x: jax.Array, train: bool) -> jax.Array:
    """Dropout inside `module`'s compact call: active only with train=True and a 'dropout' rng."""
    active = train and rate > 0 and module.has_rng('dropout')
    return nn.Dropout(rate, deterministic=not active)(x)


def attention_weights(q: jax.Array, k: jax.Array, log_temperature: jax.Array) -> jax.Array:
    """Locality self-attention weights `[B, h, N, N]` (float32) of q, k `[B, N, h, d]`:
    softmax over keys of q k^T * exp(log_temperature), each token's score on itself masked out."""
    dots = jnp.einsum('bqhd,bkhd->bhqk', q, k).astype(jnp.float32) * jnp.exp(log_temperature)
    n = dots.shape[-1]
    dots = jnp.where(jnp.eye(n, dtype=bool), -jnp.finfo(jnp.float32).max, dots)
    return jax.nn.softmax(dots, axis=-1)


def with_class_token(module: nn.Module, tokens, cls_init, pos_init):
    """Called inside a compact embedding: tokens `[B, T, D]` -> `[B, T+1, D]`, a learned class
    token (param 'cls' `[1, 1, D]`) prepended and a learned position embedding (param 'pos'
    `[1, T+1, D]`) added."""
    b, t, d = tokens.shape
    cls = module.param('cls', cls_init, (1, 1, d))
    pos = module.param('pos', pos_init, (1, t + 1, d))
    x = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, d)).astype(tokens.dtype), tokens], axis=1)
    return x + pos.astype(x.dtype)


# P3's ViT (vit_for_small_dataset) ---------------------------------------------------
@layer_module
class ShiftedPatchEmbed(nn.Module):
    """SPT + class token + position embedding + dropout: `[B, H, W, C] -> [B, T+1, D]`."""

    patch: int
    dim: int
    dropout: float = 0.1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = pad_to_multiple(x, self.patch)
        tokens = patchify(shifted_copies(x), self.patch)                 # [B, T, 5Cp^2]
        tokens = torch_layer_norm(self.dtype, 'norm')(tokens)
        tokens = torch_dense(self.dim, tokens.shape[-1], dtype=self.dtype, name='proj')(tokens)
        x = with_class_token(self, tokens, nn.initializers.normal(1.0), nn.initializers.normal(1.0))
        return dropout(self, self.dropout, x, train)


class LocalitySelfAttention(nn.Module):
    """LSA: `[B, N, D] -> [B, N, D]`, inner dimension heads * dim_head. Sows its attention
    weights `[B, heads, N, N]` as intermediates 'attention' (when that collection is mutable)."""

    dim: int
    heads: int
    dim_head: int
    dropout: float = 0.1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        b, n, _ = x.shape
        inner = self.heads * self.dim_head
        log_t = self.param('temperature', lambda key: jnp.log(jnp.float32(self.dim_head ** -0.5)))
        qkv = torch_dense(3 * inner, self.dim, use_bias=False, dtype=self.dtype, name='qkv')(x)
        q, k, v = (t.reshape(b, n, self.heads, self.dim_head) for t in jnp.split(qkv, 3, axis=-1))
        attn = attention_weights(q, k, log_t)
        self.sow('intermediates', 'attention', attn)
        out = jnp.einsum('bhqk,bkhd->bqhd', attn.astype(v.dtype), v).reshape(b, n, inner)
        out = torch_dense(self.dim, inner, dtype=self.dtype, name='out')(out)
        return dropout(self, self.dropout, out, train)


class FeedForward(nn.Module):
    """`[B, N, D] -> [B, N, D]`: Linear D -> hidden, exact GELU, dropout, Linear hidden -> D, dropout."""

    dim: int
    hidden: int
    dropout: float = 0.1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = torch_dense(self.hidden, self.dim, dtype=self.dtype, name='fc1')(x)
        x = dropout(self, self.dropout, nn.gelu(x, approximate=False), train)
        x = torch_dense(self.dim, self.hidden, dtype=self.dtype, name='fc2')(x)
        return dropout(self, self.dropout, x, train)


@layer_module
class LSABlock(nn.Module):
    """Pre-LayerNorm transformer block with LSA: `[B, N, D] -> [B, N, D]`."""

    dim: int
    heads: int
    dim_head: int
    mlp_dim: int
    dropout: float = 0.1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        y = torch_layer_norm(self.dtype, 'attn_norm')(x)
        x = x + LocalitySelfAttention(self.dim, self.heads, self.dim_head, self.dropout, self.dtype,
                                      name='attn')(y, train)
        y = torch_layer_norm(self.dtype, 'mlp_norm')(x)
        return x + FeedForward(self.dim, self.mlp_dim, self.dropout, self.dtype, name='mlp')(y, train)


@layer_module
class CLSHead(nn.Module):
    """LayerNorm and Linear on the class token: `[B, N, D] -> [B, K]`."""

    num_classes: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        del train
        x = torch_layer_norm(self.dtype, 'norm')(x[:, 0])
        return torch_dense(self.num_classes, x.shape[-1], dtype=self.dtype, name='dense')(x)


def vit_small(num_classes: int, width: int = 512, depth: int = 6, heads: int = 8, patch: int = 2,
              mlp_dim: int | None = None, dim_head: int = 64, dropout: float = 0.1,
              emb_dropout: float = 0.1, dtype: Any = jnp.float32) -> StagedModel:
    """P3's ViT (see the module docstring); `mlp_dim` None = `width`."""
    mlp_dim = width if mlp_dim is None else mlp_dim
    stages = [('embed', ShiftedPatchEmbed(patch, width, emb_dropout, dtype=dtype))]
    stages += [(f'block{i + 1}', LSABlock(width, heads, dim_head, mlp_dim, dropout, dtype=dtype))
               for i in range(depth)]
    stages.append(('head', CLSHead(num_classes, dtype=dtype)))
    return StagedModel('vit_small', tuple(stages), num_classes, dtype)


# A standard ViT ---------------------------------------------------------------------
@layer_module
class PatchEmbed(nn.Module):
    """Conv patch embedding + zero class token + position embedding: `[B, H, W, C] -> [B, T+1, D]`."""

    patch: int
    dim: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        del train
        b = x.shape[0]
        x = pad_to_multiple(x, self.patch)
        x = nn.Conv(self.dim, (self.patch, self.patch), strides=self.patch, dtype=self.dtype,
                    name='patch')(x)
        return with_class_token(self, x.reshape((b, -1, self.dim)), nn.initializers.zeros,
                                nn.initializers.normal(0.02))


@layer_module
class TransformerBlock(nn.Module):
    """Pre-LayerNorm block with standard multi-head attention: `[B, N, D] -> [B, N, D]`."""

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
    """LayerNorm, class token, Dense: `[B, N, D] -> [B, K]`."""

    num_classes: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        del train
        x = nn.LayerNorm(dtype=self.dtype, name='ln')(x)[:, 0]
        return nn.Dense(self.num_classes, dtype=self.dtype, name='dense')(x)


def vit(num_classes: int, width: int = 384, depth: int = 12, heads: int = 6, patch: int = 4,
        dtype: Any = jnp.float32) -> StagedModel:
    """A standard ViT with embedding dimension `width` (patch 4, 12 blocks, 6 heads by default)."""
    stages = [('embed', PatchEmbed(patch, width, dtype=dtype))]
    stages += [(f'block{i + 1}', TransformerBlock(width, heads, dtype=dtype)) for i in range(depth)]
    stages.append(('head', ClassTokenHead(num_classes, dtype=dtype)))
    return StagedModel('vit', tuple(stages), num_classes, dtype)
