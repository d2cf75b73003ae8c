"""Stitched models h_B^{>l}(S(g_A^{<=l})), many trained at once.

For K pairs of models (A_k, B_k) and one stitch point l (the boundary after
stage l-1, so the base holds l stages): base = A_k's stages [0, l), S_k, head
= B_k's stages [l, L). Only S trains: the loss is differentiated with respect
to S's variables alone, so base and head get no gradient, no optimizer state
and no update, and run in evaluation mode (their BatchNorm statistics are
never touched). S trains on the run's validation split with its correct labels
(never the training set), Adam by default.

All K stitches of one point train together, lifted by a strategy (vmap: one
compiled program; loop: one compiled single-stitch step per stitch). When all
pairs share their base (clean-to-noisy: the clean model) or their head
(noisy-to-clean), that model is passed once, unbatched.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from memjax.analysis.stitching.stitch_layer import (StitchLayer, init_stitch, least_squares_params,
                                          normal_equations)
from memjax.data.pipeline import normalize
from memjax.errors import ConfigError
from memjax.models import StagedModel
from memjax.train.step import cross_entropy
from memjax.analysis.lifting import Lifted, take


# Input stems: not stitch points by default (P1/P2 stitch after layers/blocks).
STEM_STAGES = ('stem', 'embed')


def stitch_points(model: StagedModel, names: tuple, include_stem: bool = False) -> list[int]:
    """Stitch points as boundaries l (base = stages [0, l)); names are the last base stage.

    Default (names empty), as P1/P2: every boundary except after the last
    stage, and except after an input stem (ResNet `stem`, ViT `embed`) unless
    `include_stem`. For the CNN that is after every conv and fc layer but the
    last; for ResNets after every residual block, layer1.0 ... layer4.{n-1}.
    """
    if not names:
        return [l for l in range(1, model.num_stages)
                if include_stem or model.stage_names[l - 1] not in STEM_STAGES]
    points = []
    for name in model.select_stages(names, 'analysis.stitching.points'):
        index = model.stage_index(name)
        if index == model.num_stages - 1:
            raise ConfigError(f"analysis.stitching.points has {name!r}, the last stage, after which nothing "
                              f"is left to stitch; choose among {', '.join(model.stage_names[:-1])}")
        points.append(index + 1)
    return sorted(set(points))


def group_ends(stage_names) -> dict[int, str]:
    """{k: stage} for ResNet residual groups: k -> the last block of layer{k} (e.g. 1 -> 'layer1.1').

    Empty for models without `layer<k>.<i>` stages (CNN, ResNet-9, VGG, ViT).
    """
    ends = {}
    for name in stage_names:
        group, dot, block = name.partition('.')
        if dot and group.startswith('layer') and group[5:].isdigit() and block.isdigit():
            ends[int(group[5:])] = name  # stages are in order: the last one of a group wins
    return dict(sorted(ends.items()))


class StitchTrainer:
    """Trains and evaluates K stitched models at one point.

    Args:
      model: the architecture of both A and B.
      mean, std: input normalisation of the run.
      point: boundary l; base = stages [0, l).
      settings: the stitching analysis's Settings.
      base, head: variables of the K base models (A_k) and head models (B_k),
        stacked [K, ...], or a single model's variables when shared.
      shared: (base shared by all K, head shared by all K).
      size: K.
    """

    def __init__(self, model: StagedModel, mean, std, point: int, settings,
                 base, head, shared: tuple[bool, bool], size: int):
        self.model, self.point, self.settings = model, point, settings
        self.mean, self.std = jnp.asarray(mean), jnp.asarray(std)
        self.lift = Lifted(settings.strategy, size)
        self.shared = shared
        self.base, self.head = base, head
        self.tx = (optax.adam(settings.learning_rate) if settings.optimizer == 'adam'
                   else optax.sgd(settings.learning_rate, momentum=0.9))
        self._layer = None  # StitchLayer, sized on the first call of init()

    # Single-stitch functions (lifted over K) --------------------------------
    def _activation(self, variables, images):
        x = normalize(images, self.mean, self.std, self.model.dtype)
        return self.model.apply(variables, x, stop=self.point).output.astype(jnp.float32)

    def _logits(self, stitch, base, head, images, train: bool):
        h = jax.lax.stop_gradient(self._activation(base, images))
        if train and 'batch_stats' in stitch:
            h, updates = self._layer.apply(stitch, h, train=True, mutable=['batch_stats'])
            stitch = {**stitch, 'batch_stats': updates['batch_stats']}
        else:
            h = self._layer.apply(stitch, h, train=False)
        return self.model.apply(head, h.astype(self.model.dtype), start=self.point).output, stitch

    def _train_step(self, stitch, opt_state, base, head, images, labels):
        def loss_fn(params):
            logits, new = self._logits({**stitch, 'params': params}, base, head, images, train=True)
            return cross_entropy(logits, labels), new
        (loss, new), grads = jax.value_and_grad(loss_fn, has_aux=True)(stitch['params'])
        updates, opt_state = self.tx.update(grads, opt_state, stitch['params'])
        return {**new, 'params': optax.apply_updates(stitch['params'], updates)}, opt_state, loss

    def _init_optimizer(self, stitch):
        return self.tx.init(stitch['params'])

    def _predict(self, stitch, base, head, images):
        return jnp.argmax(self._eval_logits(stitch, base, head, images), axis=-1).astype(jnp.int32)

    def _eval_logits(self, stitch, base, head, images):
        return self._logits(stitch, base, head, images, train=False)[0]

    def _normal_equations(self, base, target, images):
        return normal_equations(self._activation(base, images), self._activation(target, images))

    # Lifted operations -------------------------------------------------------
    def init(self, val_images: np.ndarray) -> Any:
        """S variables for the K stitches, stacked [K, ...], initialised as configured."""
        first = self.base if self.shared[0] else take(self.base, 0)
        probe = self._activation(first, jnp.asarray(val_images[:2]))
        self._layer = StitchLayer(probe.shape[-1], self.settings.batchnorm)
        keys = jax.random.split(jax.random.PRNGKey(self.settings.seed), self.lift.size)
        stacked = jax.vmap(lambda key: init_stitch(self._layer, probe.shape, key, self.settings.init))(keys)
        if self.settings.init == 'least_squares':
            stacked = self._fit_least_squares(stacked, val_images)
        return stacked

    def _fit_least_squares(self, stacked, val_images):
        # Y is B's own activation at the stitch point: the head model's prefix on the same images.
        xtx = xty = 0.0
        for i in range(0, val_images.shape[0], self.settings.eval_batch_size):
            batch = jnp.asarray(val_images[i:i + self.settings.eval_batch_size])
            a, b = self.lift(self._normal_equations, (not self.shared[0], not self.shared[1], False),
                             self.base, self.head, batch)
            xtx, xty = xtx + np.asarray(a), xty + np.asarray(b)
        fitted = [least_squares_params(xtx[k], xty[k]) for k in range(self.lift.size)]
        params = dict(stacked['params'])
        params['map'] = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *fitted)
        return {**stacked, 'params': params}

    def train(self, stitch, images: jax.Array, labels: jax.Array) -> tuple[Any, list[np.ndarray]]:
        """Trains S on (images uint8 [V, ...], labels [V]); returns (S, mean loss [K] per epoch)."""
        s = self.settings
        batched = (True, True, not self.shared[0], not self.shared[1], False, False)
        opt_state = self.lift(self._init_optimizer, (True,), stitch)
        steps = images.shape[0] // s.batch_size
        if steps == 0:
            raise ConfigError(f"analysis.stitching.batch_size={s.batch_size} is larger than the "
                              f"{images.shape[0]} validation examples; lower it")
        losses = []
        for epoch in range(s.epochs):
            order = jax.random.permutation(jax.random.fold_in(jax.random.PRNGKey(s.seed), epoch),
                                           images.shape[0])
            total = 0.0
            for step in range(steps):
                idx = order[step * s.batch_size:(step + 1) * s.batch_size]
                stitch, opt_state, loss = self.lift(self._train_step, batched, stitch, opt_state, self.base,
                                                    self.head, images[idx], labels[idx])
                total = total + loss
            losses.append(np.asarray(total) / steps)
        return stitch, losses

    def logits(self, stitch, images: jax.Array) -> np.ndarray:
        """float32 [K, B, C] logits of the stitched models on one batch of images [B, ...]."""
        return np.asarray(self.lift(self._eval_logits, (True, not self.shared[0], not self.shared[1], False),
                                    stitch, self.base, self.head, images))

    def predict(self, stitch, images: jax.Array) -> np.ndarray:
        """int32 [K, P] predictions of the stitched models on images [P, ...]."""
        return self.lift.batched_over(self._predict, (True, not self.shared[0], not self.shared[1]), images,
                                      stitch, self.base, self.head, batch=self.settings.eval_batch_size,
                                      image_position=3)
