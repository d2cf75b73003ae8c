"""Masks of example-tied dropout (P3 section 6.2) and its baselines, as P3's code defines them.

A variant is four numbers (mode, p_gen, p_mem, p_drop) with mode 0 =
example-tied, 1 = standard dropout, 2 = sparse network, 3 = none. Every mask
here is for ONE example and has the shape of one example's stage output
([H, W, C] or [C]); `StagedModel.apply(masks=...)` multiplies the stage's
output by it (a [B, ...] stack of them for a batch).

Example-tied, for a stage with C channels:
- the first floor(p_gen C) channels are generalization channels, always on;
- each training example i owns memorization channels among the other ones,
  drawn from a PRNG key folded with the stage and with i (no mask table is
  stored; P3's code keeps one and it overflows memory):
  `bernoulli` (P3's code): each non-generalization channel independently with
  probability p_mem; `exact`: exactly round(p_mem (C - floor(p_gen C))) of
  them. Either way a non-generalization channel is on for an example with
  probability p_mem;
- training: generalization + own memorization channels on, the rest zero
  (no rescaling, as P3's code);
- evaluation `expected` (P3's "test" mode, Table 1 "before"): generalization
  channels as they are, every memorization channel multiplied by p_mem
  (its expected gate in training);
- evaluation `drop` (P3's "drop" mode, Table 1 "after"): memorization
  channels zeroed, generalization channels multiplied by (p_gen + p_mem) / p_gen;
- evaluation `as_trained`: each training example with its own channels (no
  scaling); not defined for held-out examples.

Baselines (P3 Table 3, section 6.2: "standard dropout with p = p_gen" and "a
sparse network with remaining parameter fraction = p_gen"):
- standard dropout drops every ELEMENT of the activation with probability
  p_drop per example and step and scales by 1 / (1 - p_drop), nothing at
  evaluation (P3's code: nn.Dropout(p=p_fixed), so P3's p_drop is p_gen = 0.4);
- a sparse network multiplies by one fixed element-wise random mask that
  KEEPS the fraction p_gen of the elements, scaled by 1 / p_gen (P3's code:
  FixedDropout(p) keeps 1 - p and scales by 1 / (1 - p), so p = 1 - p_gen),
  in training and evaluation. Here the mask is the same for every example;
  P3's code draws it over the whole batch tensor with a fixed seed, so it
  depends on an example's position in its batch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

EXAMPLE_TIED, STANDARD, SPARSE, NONE = 0, 1, 2, 3
MODES = {'example_tied': EXAMPLE_TIED, 'standard': STANDARD, 'sparse': SPARSE, 'none': NONE}
DRAWS = ('bernoulli', 'exact')
EVALUATIONS = ('expected', 'drop', 'as_trained')
_SPARSE_SALT = 1_000_003


def generalization_mask(channels: int, p_gen) -> jax.Array:
    """float [C]: 1 for the first floor(p_gen C) channels (P3's int(p_fixed * C))."""
    return (jnp.arange(channels) < jnp.floor(p_gen * channels + 1e-6)).astype(jnp.float32)


def memorization_mask(key: jax.Array, stage: int, index, channels: int, p_gen, p_mem,
                      draw: str = 'bernoulli') -> jax.Array:
    """float [C]: example `index`'s own memorization channels (never a generalization channel)."""
    gen = generalization_mask(channels, p_gen)
    example_key = jax.random.fold_in(jax.random.fold_in(key, stage), index)
    if draw == 'bernoulli':
        own = jax.random.bernoulli(example_key, p_mem, (channels,)).astype(jnp.float32)
        return own * (1.0 - gen)
    if draw != 'exact':
        raise ValueError(f'draw {draw!r} is not one of {DRAWS}')
    scores = jnp.where(gen > 0, 2.0, jax.random.uniform(example_key, (channels,)))  # generalization ranks last
    rank = jnp.argsort(jnp.argsort(scores))
    return (rank < jnp.round(p_mem * (channels - gen.sum()))).astype(jnp.float32)


def _channels(mask: jax.Array, shape: tuple) -> jax.Array:
    return jnp.broadcast_to(mask, shape)


def sparse_mask(key: jax.Array, stage: int, shape: tuple, p_keep) -> jax.Array:
    """The sparse network's fixed element-wise mask of one stage (same for every example): each element kept
    with probability p_keep (the variant's p_gen) and scaled by 1 / p_keep."""
    keep = jax.random.bernoulli(jax.random.fold_in(jax.random.fold_in(key, _SPARSE_SALT), stage), p_keep, shape)
    return keep.astype(jnp.float32) / jnp.maximum(p_keep, 1e-6)


def training_mask(variant: jax.Array, key: jax.Array, stage: int, index, step_key: jax.Array, shape: tuple,
                  draw: str = 'bernoulli') -> jax.Array:
    """One training example's mask (shape of its stage output) under variant (mode, p_gen, p_mem, p_drop)."""
    mode, p_gen, p_mem, p_drop = variant[0], variant[1], variant[2], variant[3]
    channels = shape[-1]
    gen = generalization_mask(channels, p_gen)
    tied = _channels(jnp.maximum(gen, memorization_mask(key, stage, index, channels, p_gen, p_mem, draw)), shape)
    keep = jax.random.bernoulli(jax.random.fold_in(jax.random.fold_in(step_key, stage), index), 1.0 - p_drop, shape)
    standard = keep.astype(jnp.float32) / jnp.maximum(1.0 - p_drop, 1e-6)
    return jnp.select([mode == EXAMPLE_TIED, mode == STANDARD, mode == SPARSE],
                      [tied, standard, sparse_mask(key, stage, shape, p_gen)], jnp.ones(shape, jnp.float32))


def evaluation_mask(variant: jax.Array, key: jax.Array, stage: int, index, shape: tuple, how: str,
                    draw: str = 'bernoulli') -> jax.Array:
    """Mask at evaluation, `how` one of EVALUATIONS (see module doc); index: the training example (as_trained)."""
    if how not in EVALUATIONS:
        raise ValueError(f'evaluation {how!r} is not one of {EVALUATIONS}')
    mode, p_gen, p_mem = variant[0], variant[1], variant[2]
    channels = shape[-1]
    gen = generalization_mask(channels, p_gen)
    if how == 'expected':
        tied = gen + (1.0 - gen) * p_mem
    elif how == 'drop':
        tied = gen * (p_gen + p_mem) / jnp.maximum(p_gen, 1e-6)
    else:
        tied = jnp.maximum(gen, memorization_mask(key, stage, index, channels, p_gen, p_mem, draw))
    ones = jnp.ones(shape, jnp.float32)
    return jnp.select([mode == EXAMPLE_TIED, mode == SPARSE],
                      [_channels(tied, shape), sparse_mask(key, stage, shape, p_gen)], ones)
