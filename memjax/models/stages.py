"""Models as sequences of named stages.

Every memjax network is a `StagedModel`: an ordered tuple of (name, Flax module)
pairs whose names are the ones the papers print (`layer1.0`, `conv2`, `fc4`).
Each stage owns exactly one subtree of the variables:

    variables = {'params':      {stage_name: {...}, ...},
                 'batch_stats': {stage_name: {...}, ...}}   # only stages with BatchNorm

so "replace stage l", "freeze all but stage l" and "take stage l from model A"
are dictionary operations. One function, `apply`, runs any slice
`[start, stop)` of the stages from an activation at the boundary before `start`;
the full forward pass is the slice `[0, num_stages)`, and running consecutive
slices one after the other gives the full forward pass exactly (it is the same
sequence of the same computations).

Shapes: images `x: [B, H, W, C]` (float, already normalised), logits `[B, K]`.
Nothing here knows about replicas: a replica axis is added by `jax.vmap` or a
loop in `memjax.train.replicas`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from typing import Any, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from memjax.errors import ConfigError
from memjax.models import layer_index
from memjax.models.layer_index import LayerInfo, broadcast_mask
from memjax.models.units import GRANULARITIES, Unit, model_units

Variables = dict[str, Any]


class StageRun(NamedTuple):
    """The result of running a slice of stages.

    Attributes:
      output: the activation after the last stage run, `[B, ...]` (logits `[B, K]`
        in float32 when the slice ends at the last stage).
      batch_stats: the full batch_stats tree, with the stages run in training
        mode updated; unchanged in evaluation mode.
      features: `{name: activation [B, ...]}` for the stages and layers listed
        in `capture` (empty when nothing was asked for).
    """

    output: jax.Array
    batch_stats: dict
    features: dict


@dataclasses.dataclass(frozen=True)
class StagedModel:
    """A network as an ordered sequence of named Flax stages.

    Attributes:
      name: registry name of the architecture (e.g. `resnet18`).
      stages: `((stage_name, module), ...)`; each module is called as
        `module(x, train=bool)`.
      num_classes: size of the output layer.
      dtype: compute dtype (parameters stay float32).
      example_shape: an input shape the model accepts, for finding its layers
        and variable names without data (names and channel counts do not
        depend on the image size).
    """

    name: str
    stages: tuple[tuple[str, nn.Module], ...]
    num_classes: int
    dtype: Any = jnp.float32
    example_shape: tuple[int, ...] = (32, 32, 3)

    @property
    def stage_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.stages)

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    @functools.cached_property
    def layers(self) -> tuple[LayerInfo, ...]:
        """Every layer (conv+BN, linear, ViT embedding/block) in forward order; see `layer_index`."""
        return layer_index.enumerate_layers(self, self.example_shape)

    @property
    def layer_names(self) -> tuple[str, ...]:
        return tuple(layer.name for layer in self.layers)

    def layer(self, name: str) -> LayerInfo:
        """The layer of that path name; one clear error otherwise."""
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise ConfigError(f"unknown layer {name!r} for model {self.name}; its layers are: "
                          f"{', '.join(self.layer_names)}")

    def units(self, granularity: str) -> tuple[Unit, ...]:
        """The model cut into units of analysis: 'stage', 'layer' or 'p3_groups' (see `units`)."""
        return model_units(self, granularity)

    def stage_index(self, stage: str | int) -> int:
        """The position of a stage given by name or index; a clear error otherwise."""
        if isinstance(stage, int):
            if not -self.num_stages <= stage < self.num_stages:
                raise ConfigError(
                    f"stage index {stage} is out of range for {self.name}, which has "
                    f"{self.num_stages} stages: {', '.join(self.stage_names)}")
            return stage % self.num_stages
        if stage not in self.stage_names:
            raise ConfigError(
                f"unknown stage {stage!r} for model {self.name}; its stages are: "
                f"{', '.join(self.stage_names)}")
        return self.stage_names.index(stage)

    def select_stages(self, names: Sequence[str], key: str = 'stages') -> tuple[str, ...]:
        """The named stages in model order (all when empty); one error line naming `key` otherwise."""
        names = tuple(names) or self.stage_names
        for name in names:
            if name not in self.stage_names:
                raise ConfigError(f"{key} names stage {name!r}, which {self.name} lacks; its stages: "
                                  f"{', '.join(self.stage_names)}")
        return tuple(sorted(set(names), key=self.stage_names.index))

    def boundary(self, stage: str | int | None, default: int) -> int:
        """Boundary index `0..num_stages` (a stage name means the boundary before it)."""
        if stage is None:
            return default
        if isinstance(stage, int) and stage == self.num_stages:
            return stage
        return self.stage_index(stage)

    def init(self, rng: jax.Array, input_shape: Sequence[int]) -> Variables:
        """Initialises every stage in order.

        Args:
          rng: PRNG key; stage `i` uses `fold_in(rng, i)`.
          input_shape: one example's shape `(H, W, C)`.

        Returns:
          `{'params': {stage: ...}, 'batch_stats': {stage: ...}}`.
        """
        x = jnp.zeros((1, *input_shape), self.dtype)
        params, batch_stats = {}, {}
        for i, (name, module) in enumerate(self.stages):
            variables = module.init(jax.random.fold_in(rng, i), x, train=False)
            params[name] = variables['params']
            if 'batch_stats' in variables:
                batch_stats[name] = variables['batch_stats']
            x = module.apply(variables, x, train=False)
        return {'params': params, 'batch_stats': batch_stats}

    def variable_shapes(self, input_shape: Sequence[int] | None = None) -> Variables:
        """`init`'s variables as `jax.ShapeDtypeStruct`s (nothing computed; traced once per model and shape).

        input_shape: one example's shape `(H, W, C)`; default `example_shape`.
        """
        return _copy(_variable_shapes(self, tuple(input_shape or self.example_shape)))

    def stage_output_shapes(self, input_shape: Sequence[int]) -> dict[str, tuple[int, ...]]:
        """`{stage: one example's output shape}` in forward order, for inputs of shape `(H, W, C)`
        (nothing computed; traced once per model and shape)."""
        return dict(_stage_output_shapes(self, tuple(input_shape)))

    def apply(self, variables: Variables, x: jax.Array, *, train: bool = False,
              start: str | int | None = None, stop: str | int | None = None,
              capture: Sequence[str] | bool = (), masks: dict | None = None,
              rng: jax.Array | None = None) -> StageRun:
        """Runs stages `[start, stop)` on `x`, an activation at boundary `start`.

        Args:
          variables: `{'params': ..., 'batch_stats': ...}` of the whole model
            (stages outside the slice are ignored).
          x: `[B, ...]` input of stage `start` (images `[B, H, W, C]` for start=0).
          train: BatchNorm uses batch statistics and updates its running averages.
          start: first stage to run (name or index); default 0.
          stop: boundary to stop at (name = stop before that stage, or an index
            up to `num_stages`); default: run to the end.
          capture: stage or layer names (`layer1.0.conv_bn2`) whose outputs
            to return in `features`, or True for every stage run.
          masks: `{stage_or_layer_name: mask}` multiplying that stage's or
            layer's output channels (the last axis): `[C]` for all examples or
            `[B, C]` per example. Zeros remove channels/neurons (P3's neuron
            ablation, example-tied dropout); a layer inside a residual branch
            is masked before the skip path is added, which stays intact.
            Captured features are the masked ones.
          rng: PRNG key of the stages' dropout (stage `i`, counted from the
            model's first stage, gets 'dropout' key `fold_in(rng, i)`, so
            running consecutive slices equals the full pass). Used only with
            train=True, by stages that have dropout (`vit_small`). train=True
            without a key runs those stages without dropout; the training step
            (`memjax.train.step`) always passes one, analyses that run training
            mode without a key (stage retraining/fine-tuning, gradients from
            checkpoints) get no dropout. train=False never drops.

        Returns:
          A `StageRun`.
        """
        first = self.boundary(start, 0)
        last = self.boundary(stop, self.num_stages)
        if capture is True:
            capture = self.stage_names[first:last]
        params = variables['params']
        batch_stats = dict(variables.get('batch_stats', {}))
        features = {}
        masks = masks or {}
        inner = [key for key in (*masks, *capture) if '.' in key and key not in self.stage_names]
        x = x.astype(self.dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x
        for index, (name, module) in enumerate(self.stages[first:last], start=first):
            rngs = {'dropout': jax.random.fold_in(rng, index)} if train and rng is not None else None
            stage_vars = {'params': params[name]}
            if name in batch_stats:
                stage_vars['batch_stats'] = batch_stats[name]
            layers_here = any(key.startswith(name + '.') for key in inner)
            with (layer_index.intercept_layers(name, masks, capture, features) if layers_here
                  else contextlib.nullcontext()):
                if train and name in batch_stats:
                    x, updates = module.apply(stage_vars, x, train=True, mutable=['batch_stats'], rngs=rngs)
                    batch_stats[name] = updates['batch_stats']
                else:
                    x = module.apply(stage_vars, x, train=train, rngs=rngs)
            if masks and name in masks:
                x = x * broadcast_mask(masks[name], x)
            if name in capture:
                features[name] = x
        if last == self.num_stages:
            x = x.astype(jnp.float32)
        return StageRun(x, batch_stats, features)

    def logits(self, variables: Variables, x: jax.Array) -> jax.Array:
        """Evaluation-mode logits `[B, K]` of images `x: [B, H, W, C]`."""
        return self.apply(variables, x, train=False).output

    def stage_variables(self, variables: Variables, stage: str | int) -> Variables:
        """The `{'params': ..., 'batch_stats': ...}` subtree of one stage."""
        name = self.stage_names[self.stage_index(stage)]
        out = {'params': variables['params'][name]}
        if name in variables.get('batch_stats', {}):
            out['batch_stats'] = variables['batch_stats'][name]
        return out

    def replace_stage(self, variables: Variables, stage: str | int,
                      stage_variables: Variables) -> Variables:
        """A copy of `variables` with one stage's params (and batch_stats) replaced."""
        name = self.stage_names[self.stage_index(stage)]
        params = dict(variables['params'])
        params[name] = stage_variables['params']
        batch_stats = dict(variables.get('batch_stats', {}))
        if 'batch_stats' in stage_variables:
            batch_stats[name] = stage_variables['batch_stats']
        return {'params': params, 'batch_stats': batch_stats}

    def unit_variables(self, variables: Variables, unit: Unit) -> Variables:
        """`{'params': {path: subtree}, 'batch_stats': {path: subtree}}` of one unit
        (paths are tuples; any leading replica axes are kept)."""
        out = {'params': {}, 'batch_stats': {}}
        for path in unit.paths:
            out['params'][path] = layer_index.get_subtree(variables['params'], path)
            stats = layer_index.get_subtree(variables.get('batch_stats', {}), path)
            if stats is not None:
                out['batch_stats'][path] = stats
        return out

    def replace_unit(self, variables: Variables, unit: Unit, source: Variables) -> Variables:
        """A copy of `variables` whose unit (params and BatchNorm statistics) is taken from
        `source`, the full variables of another model or epoch of the same architecture."""
        params, stats = variables['params'], dict(variables.get('batch_stats', {}))
        for path in unit.paths:
            params = layer_index.set_subtree(params, path, layer_index.get_subtree(source['params'], path))
            value = layer_index.get_subtree(source.get('batch_stats', {}), path)
            if value is not None:
                stats = layer_index.set_subtree(stats, path, value)
        return {**variables, 'params': params, 'batch_stats': stats}

    def count_params(self, variables: Variables) -> dict[str, int]:
        """Number of trainable parameters of each stage (one replica)."""
        return {name: sum(int(leaf.size) for leaf in jax.tree_util.tree_leaves(variables['params'][name]))
                for name in self.stage_names}


def _copy(tree: Any) -> Any:
    """A new container tree holding the same leaves (callers may edit the dicts of a cached tree)."""
    return jax.tree_util.tree_map(lambda leaf: leaf, tree)


@functools.lru_cache(maxsize=64)
def _variable_shapes(model: StagedModel, input_shape: tuple[int, ...]) -> Variables:
    return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), input_shape))


@functools.lru_cache(maxsize=64)
def _stage_output_shapes(model: StagedModel, input_shape: tuple[int, ...]) -> tuple:
    x = jax.ShapeDtypeStruct((1, *input_shape), model.dtype)
    run = jax.eval_shape(lambda v, x: model.apply(v, x, capture=True), _variable_shapes(model, input_shape), x)
    return tuple((name, tuple(run.features[name].shape[1:])) for name in model.stage_names)
