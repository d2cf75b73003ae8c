"""The candidate neurons of the critical-neuron search (P3 section 6.1) and how one is removed.

Every candidate is one entry of a 0/1 mask; the search removes a candidate by
setting its entry to 0. Two candidate sets (`analysis.neurons.candidates`):

- 'channels' (the default; P3's text: "in the case of convolution layers, we
  zero-out a complete channel ... We zero-out the activation before
  propagating to the next layer"): an output channel of every conv layer
  (with its BatchNorm; both convs inside residual blocks and the projection
  shortcut included) and a unit of every linear layer but the classifier,
  removed by zeroing the layer's output channel (an ACTIVATION mask named by
  the layer, `StagedModel.apply(masks=...)`; inside a residual branch the skip
  path stays). With `classifier_weights`, every single weight of the
  classifier's kernel is a candidate too, removed by zeroing it (P3: "in the
  case of linear layers, we zero-out a single weight").
- 'p3_code' (P3's public code, experiments/neuron_flipping/attribution_utils.py:
  `get_most_activated_node` / `modify_weights` over `model.named_parameters()`):
  every PARAMETER tensor of every layer, the classifier included, gives
  candidates: a conv kernel one per output channel (its whole [kh, kw, in]
  slice), every other tensor one per element (each BatchNorm scale, each
  BatchNorm bias, each weight and bias of a linear layer). A candidate is
  removed by zeroing those parameters (a PARAMETER mask): zeroing a conv
  channel's kernel leaves its BatchNorm output at the constant
  beta - mean * gamma / sqrt(var + eps) in evaluation mode, not at 0.

Mask keys: a layer name (`layer1.0.conv_bn1`) for an activation mask [C], and
`<layer>/<path of the tensor inside it>` (`conv1/conv/kernel`, `conv1/bn/scale`,
`head.dense/kernel`) for a parameter mask: [C_out] for a conv kernel, [size]
for any other tensor.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from memjax.models import StagedModel
from memjax.models.layer_index import get_subtree, set_subtree

CANDIDATES = ('channels', 'p3_code')
SEP = '/'  # separates a layer name from the path of a tensor inside it in a parameter-mask key


def is_parameter_mask(key: str) -> bool:
    return SEP in key


def mask_layer(key: str) -> str:
    """The layer a mask key belongs to."""
    return key.split(SEP, 1)[0]


def _leaves(tree, prefix: tuple = ()) -> list[tuple[tuple[str, ...], jax.Array]]:
    if isinstance(tree, dict):
        return [item for k in sorted(tree) for item in _leaves(tree[k], prefix + (k,))]
    return [(prefix, tree)]


def _per_channel(leaf) -> bool:
    """A conv kernel [kh, kw, in, out]: one candidate per output channel (P3's code: 4-d parameters)."""
    return leaf.ndim == 4


def classifier_kernel_key(model: StagedModel, params: dict) -> str:
    """Parameter-mask key of the classifier's weight matrix [D, K]."""
    layer = model.layers[-1]
    inner = ('kernel',) if 'kernel' in get_subtree(params, layer.path) else ('dense', 'kernel')
    return layer.name + SEP + SEP.join(inner)


def full_masks(model: StagedModel, params: dict, candidates: str = 'channels',
               classifier_weights: bool = True) -> dict:
    """{key: ones} over every candidate (see the module doc for the keys and shapes)."""
    layers = model.layers
    if candidates == 'p3_code':
        masks = {}
        for layer in layers:
            for inner, leaf in _leaves(get_subtree(params, layer.path)):
                size = leaf.shape[-1] if _per_channel(leaf) else leaf.size
                masks[layer.name + SEP + SEP.join(inner)] = jnp.ones(size, jnp.float32)
        return masks
    masks = {layer.name: jnp.ones(layer.channels, jnp.float32) for layer in layers[:-1]}
    if classifier_weights:
        key = classifier_kernel_key(model, params)
        masks[key] = jnp.ones(_parameter(model, params, key).size, jnp.float32)
    return masks


def _path(model: StagedModel, key: str) -> tuple[str, ...]:
    layer, inner = key.split(SEP, 1)
    return model.layer(layer).path + tuple(inner.split(SEP))


def _parameter(model: StagedModel, params: dict, key: str):
    return get_subtree(params, _path(model, key))


def masked_variables(model: StagedModel, variables: dict, masks: dict) -> tuple[dict, dict]:
    """(variables with every parameter mask applied, the activation masks {layer: [C]})."""
    activations = {k: v for k, v in masks.items() if not is_parameter_mask(k)}
    params = variables['params']
    for key, mask in masks.items():
        if not is_parameter_mask(key):
            continue
        path = _path(model, key)
        leaf = get_subtree(params, path)
        factor = mask if _per_channel(leaf) else mask.reshape(leaf.shape)
        params = set_subtree(params, path, leaf * factor.astype(leaf.dtype))
    return {**variables, 'params': params}, activations


def masked_logits(model: StagedModel, variables: dict, x: jax.Array, masks: dict | None) -> jax.Array:
    """Evaluation-mode logits [B, K] of x [B, ...] with the masked candidates removed."""
    variables, activations = masked_variables(model, variables, masks or {})
    return model.apply(variables, x, masks=activations).output


def channel_scores(params: dict, grads: dict, channels: int) -> jax.Array:
    """[C]: sum of theta x gradient over a layer's parameters indexed by its output channel (last axis)."""
    total = jnp.zeros(channels, jnp.float32)
    for p, g in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(grads)):
        if p.ndim >= 1 and p.shape[-1] == channels:
            total = total + jnp.sum((p * g).reshape(-1, channels), axis=0)
    return total


def removal_scores(model: StagedModel, variables: dict, masks: dict, objective, score: str) -> dict:
    """{key: [n]} the first-order increase of `objective(params, masks)` when each candidate is removed.

    A parameter mask m multiplies its parameters theta, so -dJ/dm is -sum of theta x dJ/dtheta over the
    candidate's parameters: P3's code's score (param.data * grad of its sign-flipped objective) for either
    `score`. An activation mask: 'param_grad' -sum of theta x dJ/dtheta over every parameter of the layer
    indexed by its output channel (conv kernel slice, BatchNorm scale and bias; zeroing all of them zeroes the
    channel exactly), 'mask_grad' -dJ/dm.
    """
    if score == 'mask_grad' or all(is_parameter_mask(k) for k in masks):
        grads = jax.grad(objective, argnums=1)(variables['params'], masks)
        return {k: -grads[k] for k in masks}
    g_params, g_masks = jax.grad(objective, argnums=(0, 1))(variables['params'], masks)
    out = {}
    for key, mask in masks.items():
        if is_parameter_mask(key):
            out[key] = -g_masks[key]
        else:
            path = model.layer(key).path
            out[key] = -channel_scores(get_subtree(variables['params'], path), get_subtree(g_params, path),
                                       mask.shape[0])
    return out
