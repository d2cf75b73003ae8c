"""Layers inside stages: their path names, their outputs, their variables.

A stage (`memjax.models.stages`) is what the papers call a block (`layer1.0`);
a *layer* is one conv with its BatchNorm, one linear layer, a ViT patch
embedding or transformer block: every instance of a class registered with
`memjax.models.layers.layer_module`. Its name is the stage's name followed by
its path inside the stage module, e.g. `layer1.0.conv_bn1`,
`layer1.0.conv_bn2`, `layer2.0.shortcut`, `head.dense`; a stage that is itself
a layer (`stem`, `conv1`, `fc2`) gives the layer the stage's name, so for the
CNN and VGG the layers are the stages.

The same names address three things:
- the layer's output activations `[B, ..., C]` (`StagedModel.apply(capture=...)`),
- a per-channel mask on that output (`apply(masks=...)`): inside a residual
  branch only that branch's channel is scaled, the skip path is untouched,
- its variables: `params[stage][path...]` and `batch_stats[stage][path...]`
  (`layer_path`, `get_subtree`, `set_subtree`).

No model is duplicated per granularity: outputs are reached through Flax's
method interception (`nn.intercept_methods`) while the stage runs.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, NamedTuple

import flax.linen as nn
import jax

from memjax.models.layers import LAYER_TYPES


class LayerInfo(NamedTuple):
    """One layer: `name` (path name), `stage`, `path` (keys into params/batch_stats,
    starting with the stage) and `channels` (size of the output's last axis)."""

    name: str
    stage: str
    path: tuple[str, ...]
    channels: int


def broadcast_mask(mask: jax.Array, x: jax.Array) -> jax.Array:
    """A channel mask [C] or [B, C] shaped to multiply x: [B, ..., C]."""
    if mask.ndim == 2 and x.ndim > 2:
        mask = mask.reshape((mask.shape[0],) + (1,) * (x.ndim - 2) + (mask.shape[1],))
    return mask.astype(x.dtype)


def layer_name(stage: str, inner_path: tuple[str, ...]) -> str:
    return '.'.join((stage, *inner_path))


@contextlib.contextmanager
def intercept_layers(stage: str, masks: dict, capture, features: dict, seen: list | None = None):
    """While a stage module runs: multiply the outputs of the named layers by `masks[name]`
    (broadcast over the last axis), store those in `capture` into `features`, and
    append `(name, inner_path, output)` of every layer to `seen` (if given)."""
    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        if context.method_name != '__call__' or type(module) not in LAYER_TYPES:
            return next_fun(*args, **kwargs)
        inner = tuple(module.path)
        name = layer_name(stage, inner)
        out = next_fun(*args, **kwargs)
        if name in masks:
            out = out * broadcast_mask(masks[name], out)
        if name in capture:
            features[name] = out
        if seen is not None:
            seen.append((name, inner, out))
        return out

    with nn.intercept_methods(interceptor):
        yield


@functools.lru_cache(maxsize=64)
def enumerate_layers(model, input_shape) -> tuple[LayerInfo, ...]:
    """Every layer of `model` in forward order (shapes only; nothing is computed).

    Layer names and channel counts do not depend on the input's size, so one
    example shape (the model's `example_shape`) stands for every data set.
    """
    found: list[LayerInfo] = []

    def trace():
        x = jax.numpy.zeros((1, *input_shape), model.dtype)
        for i, (stage, module) in enumerate(model.stages):
            variables = module.init(jax.random.PRNGKey(i), x, train=False)
            seen: list = []
            with intercept_layers(stage, {}, (), {}, seen):
                x = module.apply(variables, x, train=False)
            for name, inner, out in seen:
                if name not in {f.name for f in found}:
                    found.append(LayerInfo(name, stage, (stage, *inner), int(out.shape[-1])))
        return x

    jax.eval_shape(trace)
    return tuple(found)


def get_subtree(tree: dict, path: tuple[str, ...]) -> Any:
    """tree[path[0]][path[1]]... ; None when a key is missing (a layer without BatchNorm)."""
    for key in path:
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree


def set_subtree(tree: dict, path: tuple[str, ...], value: Any) -> dict:
    """A copy of `tree` (dicts copied along `path` only) with tree[path...] = value."""
    out = dict(tree)
    if len(path) == 1:
        out[path[0]] = value
    else:
        out[path[0]] = set_subtree(tree[path[0]], path[1:], value)
    return out
