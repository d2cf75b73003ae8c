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
AGGREGATES = ('tensor_mean', 'concat')


def _leaves_with_names(tree) -> list[tuple[str, jax.Array]]:
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [('/'.join(str(getattr(k, 'key', k)) for k in path), leaf) for path, leaf in flat]


def tensor_sums(model: StagedModel, g_clean: dict, g_noisy: dict) -> dict[tuple[str, str], dict[str, jax.Array]]:
    """{(layer, tensor): {clean_sq, noisy_sq, dot, count}} for every parameter tensor of every layer.

    clean_sq = ||g_c||^2, noisy_sq = ||g_n||^2, dot = <g_c, g_n>, count = number of
    parameters of the tensor (`tensor` is its path inside the layer, e.g.
    'conv/kernel', 'bn/scale'). Any unit's statistics follow exactly
    (`unit_statistics`); params outside every layer do not exist
    (tests/layer_api_test.py).
    """
    out = {}
    for layer in model.layers:
        clean = dict(_leaves_with_names(get_subtree(g_clean, layer.path)))
        for name, n in _leaves_with_names(get_subtree(g_noisy, layer.path)):
            c = clean[name]
            out[(layer.name, name)] = {'clean_sq': jnp.sum(c * c), 'noisy_sq': jnp.sum(n * n),
                                       'dot': jnp.sum(c * n), 'count': jnp.asarray(c.size, jnp.float32)}
    return out


def _statistics(sq_c: float, sq_n: float, dot: float, count: float) -> dict[str, float]:
    root = np.sqrt(count)
    cn, nn = np.sqrt(sq_c), np.sqrt(sq_n)
    return {'clean_norm': cn / root, 'noisy_norm': nn / root,
            'total_norm': np.sqrt(max(sq_c + sq_n + 2 * dot, 0.0)) / root,
            'cosine': dot / (cn * nn) if cn * nn > 0 else 0.0}


def unit_statistics(sums: dict[tuple[str, str], dict], units, aggregate: str = 'tensor_mean') -> dict[str, dict]:
    """{unit: {clean_norm, noisy_norm, total_norm, cosine}} from `tensor_sums` (one replica, floats).

    aggregate:
      'tensor_mean' (P3: "to combine results over multiple layers, we take the
        average of the individual normalized gradient norms"; its code
        normalises every parameter tensor on its own): each tensor's norm /
        sqrt(#its params) and cosine, averaged over the unit's tensors;
      'concat': the unit's parameters as one vector, norm / sqrt(#params) and
        one cosine.
    A cosine is 0 where either part is 0.
    """
    out = {}
    for unit in units:
        members = [value for (layer, _), value in sums.items() if layer in unit.layers]
        if aggregate == 'concat':
            out[unit.name] = _statistics(*(sum(float(m[k]) for m in members) for k in SUMS))
        else:
            each = [_statistics(*(float(m[k]) for k in SUMS)) for m in members]
            out[unit.name] = {key: float(np.mean([e[key] for e in each])) for key in each[0]}
    return out


def rows_from_sums(sums, epoch: int, replicas, include=None) -> list[dict]:
    """Record rows {epoch, replica, noise_ratio, seed, layer, tensor, clean_sq, noisy_sq, dot, count} for
    stacked `tensor_sums` {(layer, tensor): {key: [R]}}.

    include: bool [R] (default all): replicas to write rows for; a replica that
    did not train this epoch (it had stopped) writes none, rather than zeros.
    """
    rows = []
    for rep in replicas:
        if include is not None and not include[rep.index]:
            continue
        for (layer, tensor), values in sums.items():
            rows.append({'epoch': epoch, 'replica': rep.index, 'noise_ratio': rep.noise_ratio, 'seed': rep.seed,
                         'layer': layer, 'tensor': tensor,
                         **{k: float(np.asarray(v)[rep.index]) for k, v in values.items()}})
    return rows


def unit_rows(tensor_rows: list[dict], units, granularity: str, source: str, aggregate: str) -> list[dict]:
    """Rows per (epoch, replica, unit) with the unit's norms and cosine, from per-tensor record rows.

    source: 'training' (the epoch's SGD gradients, summed during training) or
    'checkpoints' (the full-data gradient at a kept epoch).
    """
    groups: dict[tuple, dict] = {}
    meta = {}
    for row in tensor_rows:
        key = (row['epoch'], row['replica'])
        groups.setdefault(key, {})[(row['layer'], row['tensor'])] = row
        meta[key] = {'epoch': row['epoch'], 'replica': row['replica'], 'noise_ratio': row['noise_ratio'],
                     'seed': row['seed']}
    rows = []
    for key in sorted(groups):
        for unit, values in unit_statistics(groups[key], units, aggregate).items():
            rows.append({**meta[key], 'source': source, 'granularity': granularity, 'aggregate': aggregate,
                         'unit': unit, **values})
    return rows
