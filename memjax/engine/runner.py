"""One model runner per (model, normalisation): every way memjax runs a trained network.

`runner_for(model, mean, std)` returns the same `ModelRunner` for equal
arguments, so the programs it owns (lifted and compiled through
`memjax.engine.lifting`) are built once per process and reused by training,
every analysis and every later run of the same architecture and data.

Single-model functions (methods; `images` are uint8 [B, H, W, C], normalised
inside as training normalises them; evaluation mode unless `train=True`):

- `logits(variables, images, masks=None)` -> float32 [B, K];
- `predict(variables, images, masks=None)` -> int32 [B];
- `features(variables, images, outputs, stop, pooling)` -> tuple of [B, D_l]
  (stage or layer outputs by name, flattened or spatially mean-pooled);
- `pixel_logits(variables, pixels)` -> float32 [B, K] of float pixels in [0, 1]
  (P4's input space: gradients flow through the normalisation).

Lifted over K models (variables stacked [K, ...] or `Replicas`), on the host
in example batches: `predict_all`, `logits_all`, `features_all`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from memjax.data.pipeline import normalize
from memjax.engine.lifting import Lifting, host, lift, stacked
from memjax.models.stages import StagedModel


@dataclasses.dataclass(frozen=True, eq=False)
class ModelRunner:
    """A model with its input normalisation, and the compiled programs that run it.

    Attributes:
      model: the StagedModel.
      mean, std: per-channel normalisation (C floats), as `memjax.data.pipeline.normalize` takes.
    """

    model: StagedModel
    mean: tuple
    std: tuple

    def normalize(self, images: jax.Array) -> jax.Array:
        """uint8 [B, H, W, C] -> model.dtype [B, H, W, C]."""
        return normalize(images, jnp.asarray(self.mean, jnp.float32), jnp.asarray(self.std, jnp.float32),
                         self.model.dtype)

    # Single model ------------------------------------------------------------
    def logits(self, variables, images, masks=None) -> jax.Array:
        """Evaluation-mode logits float32 [B, K]; masks: {stage or layer: [C] or [B, C]} (see StagedModel)."""
        return self.model.apply(variables, self.normalize(images), masks=masks).output.astype(jnp.float32)

    def predict(self, variables, images, masks=None) -> jax.Array:
        """int32 [B] predicted classes."""
        return jnp.argmax(self.logits(variables, images, masks), axis=-1).astype(jnp.int32)

    def features(self, variables, images, *, outputs: tuple, pooling: str = 'flatten') -> tuple:
        """The outputs named in `outputs` (stages or layers), float32, each [B, D]: flattened, or
        ('mean') averaged over the spatial axes first. Stages after the last one needed do not run."""
        model = self.model
        stop = max(model.stage_index(_stage_of(model, name)) for name in outputs) + 1
        run = model.apply(variables, self.normalize(images), stop=stop, capture=outputs)
        out = []
        for name in outputs:
            f = run.features[name].astype(jnp.float32)
            if pooling == 'mean' and f.ndim > 2:
                f = jnp.mean(f, axis=tuple(range(1, f.ndim - 1)))
            out.append(f.reshape(f.shape[0], -1))
        return tuple(out)

    def pixel_logits(self, variables, pixels) -> jax.Array:
        """Evaluation-mode logits float32 [B, K] of float pixels [B, H, W, C] in [0, 1] (x / 255)."""
        mean, std = jnp.asarray(self.mean, jnp.float32), jnp.asarray(self.std, jnp.float32)
        x = ((pixels.astype(jnp.float32) - mean) / std).astype(self.model.dtype)
        return self.model.apply(variables, x, train=False).output.astype(jnp.float32)

    @functools.lru_cache(maxsize=None)
    def jitted(self, method: str, **static) -> Callable:
        """The single-model method `method` compiled, its keyword arguments `static` fixed (one program
        per runner, method and static values, for the life of the process)."""
        return jax.jit(functools.partial(getattr(self, method), **static))

    # K models, on the host in example batches ----------------------------------
    def _batched(self, fn, lifting, variables, images, batch: int, masks=None, static: dict | None = None):
        """fn over K models and over example batches of images [P, ...]; numpy trees [K, P, ...]."""
        static = static or {}
        per_replica = ('variables', 'masks') if masks is not None else ('variables',)
        program = lift(fn, per_replica, lifting, static=tuple(static))
        extra = {'masks': masks} if masks is not None else {}
        parts = [host(stacked(program(variables=variables, images=images[s:s + batch], **extra, **static)))
                 for s in range(0, images.shape[0], batch)]
        return jax.tree_util.tree_map(lambda *xs: np.concatenate(xs, axis=1), *parts)

    def predict_all(self, variables, images, lifting: Lifting | str, batch: int = 1000,
                    masks: dict | None = None) -> np.ndarray:
        """int32 [K, P]: each of K models (variables [K, ...]) on images uint8 [P, ...];
        masks, optional: per-model masks stacked [K, ...]."""
        return self._batched(self.predict, lifting, variables, images, batch, masks)

    def logits_all(self, variables, images, lifting: Lifting | str, batch: int = 1000) -> np.ndarray:
        """float32 [K, P, C] logits of each of K models on images [P, ...]."""
        return self._batched(self.logits, lifting, variables, images, batch)

    def features_all(self, variables, images, lifting: Lifting | str, outputs: Sequence[str],
                     pooling: str = 'flatten', batch: int = 500) -> tuple:
        """Tuple of L arrays float32 [K, P, D_l]: the named outputs of each of K models on images."""
        return self._batched(self.features, lifting, variables, images, batch,
                             static={'outputs': tuple(outputs), 'pooling': pooling})


def _stage_of(model: StagedModel, name: str) -> str:
    """The stage a stage or layer name belongs to."""
    if name in model.stage_names:
        return name
    return model.layer(name).stage


@functools.lru_cache(maxsize=64)
def _runner(model: StagedModel, mean: tuple, std: tuple) -> ModelRunner:
    return ModelRunner(model, mean, std)


def runner_for(model: StagedModel, mean, std) -> ModelRunner:
    """The process's ModelRunner of `model` with normalisation (mean, std) ([C] each)."""
    as_tuple = lambda v: tuple(float(x) for x in np.asarray(v, np.float64).ravel())
    return _runner(model, as_tuple(mean), as_tuple(std))
