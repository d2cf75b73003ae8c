"""Channel masks of example-tied dropout (P3 section 6.2) and its baselines.

A variant is four numbers, so that variants can be vmapped side by side:
(mode, p_gen, p_mem, p_drop) with mode 0 = example-tied, 1 = standard
dropout, 2 = sparse network, 3 = none.

Example-tied, for a stage with C channels: the first round(p_gen C) channels
are generalization channels, always active. Each training example i owns
round(p_mem C) of the other channels, drawn from a PRNG key folded with the
stage and with i, so no mask table is stored (P3's public code keeps one, and
it overflows memory); they are active only when example i is in the batch.
p_mem is a fraction of ALL channels (P3 Table 3: p_gen = 0.4, p_mem = 0.2
makes 60% of the channels active for an example). At evaluation the
memorization channels are dropped: only generalization channels remain.

Baselines (P3 Table 3): standard dropout drops each channel with probability
p_drop per example and step (scaled by 1/(1-p_drop)), all channels at
evaluation; a sparse network keeps the same first round(p_gen C) channels,
always, in training and evaluation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

EXAMPLE_TIED, STANDARD, SPARSE, NONE = 0, 1, 2, 3
MODES = {'example_tied': EXAMPLE_TIED, 'standard': STANDARD, 'sparse': SPARSE, 'none': NONE}


def generalization_mask(channels: int, p_gen) -> jax.Array:
    """float [C]: 1 for the first round(p_gen C) channels."""
    return (jnp.arange(channels) < jnp.round(p_gen * channels)).astype(jnp.float32)


def memorization_mask(key: jax.Array, stage: int, index, channels: int, p_gen, p_mem) -> jax.Array:
    """float [C]: example `index`'s own round(p_mem C) channels among the non-generalization ones."""
    gen = generalization_mask(channels, p_gen)
    scores = jax.random.uniform(jax.random.fold_in(jax.random.fold_in(key, stage), index), (channels,))
    scores = jnp.where(gen > 0, 2.0, scores)  # generalization channels rank last
    rank = jnp.argsort(jnp.argsort(scores))
    return (rank < jnp.round(p_mem * channels)).astype(jnp.float32)


def training_mask(variant: jax.Array, key: jax.Array, stage: int, index, step_key: jax.Array,
                  channels: int) -> jax.Array:
    """The mask [C] of one training example under a variant (mode, p_gen, p_mem, p_drop)."""
    mode, p_gen, p_mem, p_drop = variant[0], variant[1], variant[2], variant[3]
    gen = generalization_mask(channels, p_gen)
    tied = jnp.maximum(gen, memorization_mask(key, stage, index, channels, p_gen, p_mem))
    keep = jax.random.bernoulli(jax.random.fold_in(jax.random.fold_in(step_key, stage), index), 1.0 - p_drop,
                                (channels,))
    standard = keep.astype(jnp.float32) / jnp.maximum(1.0 - p_drop, 1e-6)
    return jnp.select([mode == EXAMPLE_TIED, mode == STANDARD, mode == SPARSE],
                      [tied, standard, gen], jnp.ones(channels, jnp.float32))


def evaluation_mask(variant: jax.Array, key: jax.Array, stage: int, index, channels: int, how: str) -> jax.Array:
    """Mask [C] at evaluation.

    how: 'generalization' (memorization channels dropped), 'as_trained' (the
    example's own channels too; index < 0 means a held-out example, which
    owns none), or 'all' (every channel on).
    """
    mode, p_gen, p_mem = variant[0], variant[1], variant[2]
    gen = generalization_mask(channels, p_gen)
    ones = jnp.ones(channels, jnp.float32)
    if how == 'all':
        return jnp.where(mode == SPARSE, gen, ones)
    own = jnp.where(index >= 0, memorization_mask(key, stage, jnp.maximum(index, 0), channels, p_gen, p_mem), 0.0)
    tied = gen if how == 'generalization' else jnp.maximum(gen, own)
    return jnp.select([mode == EXAMPLE_TIED, mode == SPARSE], [tied, gen], ones)
