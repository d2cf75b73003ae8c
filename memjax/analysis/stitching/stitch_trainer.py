"""Stitched models h_B^{>l}(S(g_A^{<=l})), many trained at once.

For K pairs of models (A_k, B_k) and one stitch point l (the boundary after
stage l-1, so the base holds l stages): base = A_k's stages [0, l), S_k, head
= B_k's stages [l, L). Only S trains: the loss is differentiated with respect
to S's variables alone, so base and head get no gradient, no optimizer state
and no update, and run in evaluation mode (their BatchNorm statistics are
never touched). S trains on the run's validation split with its correct labels
(never the training set), Adam by default.

All K stitches of one point train together in the one fit loop
(`memjax.engine.fit`), lifted as `train.strategy` says. When all pairs share
their base (clean-to-noisy: the clean model) or their head (noisy-to-clean),
that model is passed once, unbatched.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from memjax.analysis.stitching.stitch_layer import StitchLayer, init_stitch, least_squares_params, normal_equations
from memjax.engine.fit import Batches, fit
from memjax.engine.lifting import Lifting, lift, stacked, take
from memjax.engine.runner import ModelRunner
from memjax.errors import ConfigError
from memjax.models import StagedModel
from memjax.train.state import OptimizerSpec, TrainState
from memjax.train.trainable import weighted_cross_entropy


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


@dataclasses.dataclass(frozen=True)
class StitchInit:
    """S's initial variables from one stitch's key (lifted over the stitches)."""

    layer: StitchLayer
    activation_shape: tuple
    init: str

    def __call__(self, key):
        return init_stitch(self.layer, self.activation_shape, key, self.init)


@dataclasses.dataclass(frozen=True)
class Stitched:
    """The stitched model of ONE pair as single-model functions (value-hashable: lifted and cached).

    `stitch` is S's variables ({'params', maybe 'batch_stats'}); `base`, `head` the variables of models A and
    B; images uint8 [B, H, W, C].
    """

    runner: ModelRunner
    point: int
    layer: StitchLayer
    optimizer: OptimizerSpec

    def activation(self, variables, images):
        """A's activation at the stitch point, float32 [B, ...]."""
        x = self.runner.normalize(images)
        return self.runner.model.apply(variables, x, stop=self.point).output.astype(jnp.float32)

    def forward(self, stitch, base, head, images, train: bool):
        """(logits [B, K], S's variables with updated BatchNorm statistics when training)."""
        h = jax.lax.stop_gradient(self.activation(base, images))
        if train and 'batch_stats' in stitch:
            h, updates = self.layer.apply(stitch, h, train=True, mutable=['batch_stats'])
            stitch = {**stitch, 'batch_stats': updates['batch_stats']}
        else:
            h = self.layer.apply(stitch, h, train=False)
        model = self.runner.model
        return model.apply(head, h.astype(model.dtype), start=self.point).output, stitch

    def logits(self, stitch, base, head, images):
        return self.forward(stitch, base, head, images, train=False)[0].astype(jnp.float32)

    def predict(self, stitch, base, head, images):
        return jnp.argmax(self.logits(stitch, base, head, images), axis=-1).astype(jnp.int32)

    def normal_equations(self, base, head, images):
        """Statistics of the least-squares fit of B's own activation from A's (see `normal_equations`)."""
        return normal_equations(self.activation(base, images), self.activation(head, images))

    def init(self, stitch) -> TrainState:
        return TrainState(stitch['params'], stitch.get('batch_stats', {}), self.optimizer.build().init(stitch['params']))

    def step(self, state: TrainState, *, idx, weights, epoch, step, images, labels, base, head):
        """One step of S only on validation batch idx [B] (`memjax.engine.fit` trainable)."""
        x, y = images[idx], labels[idx]

        def loss_fn(params):
            logits, new = self.forward({'params': params, 'batch_stats': state.batch_stats}, base, head, x, True)
            return weighted_cross_entropy(logits, y, weights), new

        (loss, new), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        tx = self.optimizer.build()
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        return state.replace(params=optax.apply_updates(state.params, updates),
                             batch_stats=new.get('batch_stats', {}), opt_state=opt_state), loss


class StitchTrainer:
    """Trains and evaluates K stitched models at one point.

    Args:
      runner: the architecture of both A and B with the run's normalisation.
      point: boundary l; base = stages [0, l).
      settings: the stitching analysis's Settings.
      base, head: variables of the K base models (A_k) and head models (B_k),
        stacked [K, ...], or a single model's variables when shared.
      shared: (base shared by all K, head shared by all K).
      size: K.
      lifting: how the K stitches are lifted.
    """

    def __init__(self, runner: ModelRunner, point: int, settings, base, head, shared: tuple[bool, bool], size: int,
                 lifting: Lifting):
        self.runner, self.point, self.settings = runner, point, settings
        self.lifting, self.size, self.shared = lifting, size, shared
        self.base, self.head = base, head
        self.optimizer = OptimizerSpec(settings.optimizer, settings.learning_rate, 'constant', momentum=0.9)
        self.stitched: Stitched | None = None  # sized on the first call of init()

    def _models(self) -> tuple[tuple[str, ...], dict, dict]:
        """(per-model argument names, per-model models, shared models) of base and head."""
        own, common = {}, {}
        for name, value, is_shared in (('base', self.base, self.shared[0]), ('head', self.head, self.shared[1])):
            (common if is_shared else own)[name] = value
        return tuple(own), own, common

    def _lift(self, fn, extra: tuple[str, ...] = ()):
        names, own, common = self._models()
        return lift(fn, (*extra, *names), self.lifting), {**own, **common}

    # Lifted operations -------------------------------------------------------
    def init(self, val_images: np.ndarray) -> Any:
        """S variables for the K stitches, stacked [K, ...], initialised as configured."""
        first = self.base if self.shared[0] else take(self.base, 0)
        runner = self.runner
        probe = Stitched(runner, self.point, StitchLayer(1), self.optimizer).activation(first, jnp.asarray(val_images[:2]))
        layer = StitchLayer(probe.shape[-1], self.settings.batchnorm)
        self.stitched = Stitched(runner, self.point, layer, self.optimizer)
        keys = jax.random.split(jax.random.PRNGKey(self.settings.seed), self.size)
        stacked_s = stacked(lift(StitchInit(layer, tuple(probe.shape), self.settings.init), ('key',),
                                 self.lifting)(key=keys))
        if self.settings.init == 'least_squares':
            stacked_s = self._fit_least_squares(stacked_s, val_images)
        return stacked_s

    def _fit_least_squares(self, stacked_s, val_images):
        # Y is B's own activation at the stitch point: the head model's prefix on the same images.
        program, models = self._lift(self.stitched.normal_equations)
        xtx = xty = 0.0
        for i in range(0, val_images.shape[0], self.settings.eval_batch_size):
            batch = jnp.asarray(val_images[i:i + self.settings.eval_batch_size])
            a, b = stacked(program(images=batch, **models))
            xtx, xty = xtx + np.asarray(a), xty + np.asarray(b)
        fitted = [least_squares_params(xtx[k], xty[k]) for k in range(self.size)]
        params = dict(stacked_s['params'])
        params['map'] = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *fitted)
        return {**stacked_s, 'params': params}

    def train(self, stitch, images: jax.Array, labels: jax.Array) -> tuple[Any, list[np.ndarray]]:
        """Trains S on (images uint8 [V, ...], labels [V]); returns (S, mean loss [K] per epoch)."""
        s = self.settings
        steps = images.shape[0] // s.batch_size
        if steps == 0:
            raise ConfigError(f"analysis.stitching.batch_size={s.batch_size} is larger than the "
                              f"{images.shape[0]} validation examples; lower it")
        state = lift(self.stitched.init, ('stitch',), self.lifting)(stitch=stitch)
        names, own, common = self._models()
        losses = []

        class Losses:
            def after_epoch(self, fit_run, epoch, state, epoch_losses):
                losses.append(epoch_losses)
                return state

        def batches(epoch: int) -> Batches:
            order = jax.random.permutation(jax.random.fold_in(jax.random.PRNGKey(s.seed), epoch - 1), images.shape[0])
            return Batches(order[:steps * s.batch_size].astype(jnp.int32), np.full(self.size, steps))

        state = fit(self.stitched, state, epochs=range(1, s.epochs + 1), batches=batches, own=own,
                    common={**common, 'images': images, 'labels': labels}, lifting=self.lifting,
                    batch_size=s.batch_size, hooks=[Losses()])
        state = stacked(state)
        out = {'params': state.params}
        if state.batch_stats:
            out['batch_stats'] = state.batch_stats
        return out, losses

    def logits(self, stitch, images: jax.Array) -> np.ndarray:
        """float32 [K, B, C] logits of the stitched models on one batch of images [B, ...]."""
        program, models = self._lift(self.stitched.logits, ('stitch',))
        return np.asarray(stacked(program(stitch=stitch, images=images, **models)))

    def predict(self, stitch, images: jax.Array) -> np.ndarray:
        """int32 [K, P] predictions of the stitched models on images [P, ...]."""
        program, models = self._lift(self.stitched.predict, ('stitch',))
        b = self.settings.eval_batch_size
        return np.concatenate([np.asarray(stacked(program(stitch=stitch, images=images[i:i + b], **models)))
                               for i in range(0, images.shape[0], b)], axis=1)
