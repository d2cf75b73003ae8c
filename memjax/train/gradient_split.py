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
from memjax.models.layer_index import get_subtree


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


SUMS = ('clean_sq', 'noisy_sq', 'dot', 'count')


def layer_sums(model: StagedModel, g_clean: dict, g_noisy: dict) -> dict[str, dict[str, jax.Array]]:
    """{layer: {clean_sq, noisy_sq, dot, count}} of the two gradient parts restricted to each layer's params.

    clean_sq = ||g_c||^2, noisy_sq = ||g_n||^2, dot = <g_c, g_n>, count = number of
    parameters. Sums add over layers, so any unit (stage, layer, P3 group) gets its
    norms and cosine from them exactly (`unit_statistics`). Params outside every
    layer do not exist (tests/layer_api_test.py).
    """
    out = {}
    for layer in model.layers:
        c = jnp.concatenate([x.ravel() for x in jax.tree_util.tree_leaves(get_subtree(g_clean, layer.path))])
        n = jnp.concatenate([x.ravel() for x in jax.tree_util.tree_leaves(get_subtree(g_noisy, layer.path))])
        out[layer.name] = {'clean_sq': jnp.sum(c * c), 'noisy_sq': jnp.sum(n * n), 'dot': jnp.sum(c * n),
                           'count': jnp.asarray(c.size, jnp.float32)}
    return out


def unit_statistics(sums: dict[str, dict], units) -> dict[str, dict[str, float]]:
    """{unit: {clean_norm, noisy_norm, total_norm, cosine}} from per-layer `layer_sums` (one replica, floats).

    Norms are divided by sqrt(#params of the unit); the cosine is that of the
    unit's clean and noisy parts (0 when either is 0).
    """
    out = {}
    for unit in units:
        total = {key: sum(float(sums[layer][key]) for layer in unit.layers) for key in SUMS}
        root = np.sqrt(total['count'])
        cn, nn = np.sqrt(total['clean_sq']), np.sqrt(total['noisy_sq'])
        both = total['clean_sq'] + total['noisy_sq'] + 2 * total['dot']
        out[unit.name] = {'clean_norm': cn / root, 'noisy_norm': nn / root,
                          'total_norm': np.sqrt(max(both, 0.0)) / root,
                          'cosine': total['dot'] / (cn * nn) if cn * nn > 0 else 0.0}
    return out


def rows_from_sums(sums, epoch: int, replicas, include=None) -> list[dict]:
    """Record rows {epoch, replica, noise_ratio, seed, layer, clean_sq, noisy_sq, dot, count} for stacked
    `layer_sums` {layer: {key: [R]}}.

    include: bool [R] (default all): replicas to write rows for; a replica that
    did not train this epoch (it had stopped) writes none, rather than zeros.
    """
    rows = []
    for rep in replicas:
        if include is not None and not include[rep.index]:
            continue
        for layer, values in sums.items():
            rows.append({'epoch': epoch, 'replica': rep.index, 'noise_ratio': rep.noise_ratio, 'seed': rep.seed,
                         'layer': layer, **{k: float(np.asarray(v)[rep.index]) for k, v in values.items()}})
    return rows


def unit_rows(layer_rows: list[dict], units, granularity: str, source: str) -> list[dict]:
    """Rows per (epoch, replica, unit) with the unit's norms and cosine, from per-layer record rows.

    source: 'training' (the epoch's SGD gradients, summed during training) or
    'checkpoints' (the full-data gradient at a kept epoch).
    """
    groups: dict[tuple, dict] = {}
    meta = {}
    for row in layer_rows:
        key = (row['epoch'], row['replica'])
        groups.setdefault(key, {})[row['layer']] = row
        meta[key] = {'epoch': row['epoch'], 'replica': row['replica'], 'noise_ratio': row['noise_ratio'],
                     'seed': row['seed']}
    rows = []
    for key in sorted(groups):
        for unit, values in unit_statistics(groups[key], units).items():
            rows.append({**meta[key], 'source': source, 'granularity': granularity, 'unit': unit, **values})
    return rows
