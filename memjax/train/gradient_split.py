"""Splitting a gradient into its clean and noisy parts (used by training and analysis).

See `memjax.analysis.localization.gradients` for the quantities; this module holds the two
functions both the training step (`train.gradient_accounting`) and the
analysis from checkpoints call.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from memjax.models import StagedModel


def split_gradients(model: StagedModel, variables: dict, x: jax.Array, labels: jax.Array, noisy: jax.Array,
                    scale: float | jax.Array, rng: jax.Array | None = None):
    """(g_clean, g_noisy, new batch_stats, per-example losses) of one batch.

    Args:
      x: normalised inputs [B, ...]; labels: int [B]; noisy: bool [B].
      scale: the loss weight of one example (1/B for a batch mean, 1/N for a set).
      rng: dropout key for `StagedModel.apply` (the training step passes one; None: no dropout).
    """
    def per_example(params):
        run = model.apply({**variables, 'params': params}, x, train=True, rng=rng)
        losses = optax.softmax_cross_entropy_with_integer_labels(run.output.astype(jnp.float32), labels)
        return losses, run.batch_stats

    losses, vjp, batch_stats = jax.vjp(per_example, variables['params'], has_aux=True)
    weights = jnp.stack([jnp.where(noisy, 0.0, scale), jnp.where(noisy, scale, 0.0)]).astype(losses.dtype)
    (grads,) = jax.vmap(vjp)(weights)
    g_clean = jax.tree_util.tree_map(lambda g: g[0], grads)
    g_noisy = jax.tree_util.tree_map(lambda g: g[1], grads)
    return g_clean, g_noisy, batch_stats, losses


def stage_statistics(g_clean: dict, g_noisy: dict) -> dict[str, dict[str, jax.Array]]:
    """{stage: {clean_norm, noisy_norm, total_norm, cosine}} (norms divided by sqrt(#params))."""
    out = {}
    for stage in g_clean:
        c = jnp.concatenate([x.ravel() for x in jax.tree_util.tree_leaves(g_clean[stage])])
        n = jnp.concatenate([x.ravel() for x in jax.tree_util.tree_leaves(g_noisy[stage])])
        root = jnp.sqrt(jnp.asarray(c.size, jnp.float32))
        cn, nn = jnp.linalg.norm(c), jnp.linalg.norm(n)
        den = cn * nn
        out[stage] = {'clean_norm': cn / root, 'noisy_norm': nn / root, 'total_norm': jnp.linalg.norm(c + n) / root,
                      'cosine': jnp.where(den > 0, jnp.dot(c, n) / jnp.where(den > 0, den, 1.0), 0.0)}
    return out


def rows_from_statistics(statistics, epoch: int, replicas, source: str, include=None) -> list[dict]:
    """Rows for stacked statistics {stage: {key: [R]}}, labelled with their `source`.

    source: 'training' (the epoch's SGD gradients, summed during training) or
    'checkpoints' (the full-data gradient at a kept epoch).
    include: bool [R] (default all): replicas to write rows for; a replica that
    did not train this epoch (it had stopped) writes none, rather than zeros.
    """
    rows = []
    for rep in replicas:
        if include is not None and not include[rep.index]:
            continue
        for stage, values in statistics.items():
            rows.append({'epoch': epoch, 'replica': rep.index, 'noise_ratio': rep.noise_ratio, 'seed': rep.seed,
                         'stage': stage, 'source': source,
                         **{k: float(np.asarray(v)[rep.index]) for k, v in values.items()}})
    return rows
