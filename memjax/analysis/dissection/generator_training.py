"""P4's GAN: a DCGAN trained on the training images, whose generator regularises
activation maximisation (x_j* = G(z_j*)).

Training (Radford et al. 2016, as P4 uses it): images uint8 `[N, H, W, C]` scaled
to [-1, 1]; Adam lr 2e-4, beta1 0.5 for both networks; the non-saturating BCE
loss (D: real -> 1, G(z) -> 0; G: D(G(z)) -> 1), z ~ N(0, I) of `latent_dim`
(100); P4 trains 30 epochs. Each step: one generator forward pass (batch
statistics, running averages updated once), a discriminator update on the real
batch and the detached fakes, then a generator update through the updated
discriminator, reusing the same forward pass (PyTorch's DCGAN example). The
GAN has its own step (`GanTrainable`) in memjax's one fit loop
(`memjax.engine.fit`): an epoch is `N // batch_size` steps (the last partial
batch is dropped) of a seeded permutation.

Determinism and resume: everything random comes from `seed` (initialisation:
fold_in 0 and 1, data order: fold_in 2 + epoch, latents: fold_in 3 + epoch +
step). After every epoch the full state (both networks' variables and Adam
states) is saved with orbax (through `memjax.checkpoint.Checkpoints`) under
`directory/state/<epoch>/`; rerunning `train_generator` with the same
directory continues after the last saved epoch and gives bit-identical
generator variables to an uninterrupted run (a larger `epochs` extends a
finished run). The finished generator's `{'params', 'batch_stats'}` is kept in
`directory/epochs/<epochs>/`, its settings in `directory/generator.json`;
`load_generator(directory)` reads them back.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from memjax.checkpoint import Checkpoints
from memjax.engine.fit import Batches, fit
from memjax.engine.lifting import stacked
from memjax.errors import ConfigError, RunDirectoryError
from memjax.models.dcgan import Discriminator, Generator, dcgan

SETTINGS_FILE = 'generator.json'


@dataclasses.dataclass(frozen=True)
class GeneratorSettings:
    """Settings of one GAN training; all but `epochs` must match to resume."""

    epochs: int = 30
    batch_size: int = 128
    learning_rate: float = 2e-4
    beta1: float = 0.5
    latent_dim: int = 100
    width: int = 64
    seed: int = 0


def to_unit_range(images) -> jax.Array:
    """uint8 `[..., H, W, C]` in 0..255 -> float32 in [-1, 1]."""
    return jnp.asarray(images).astype(jnp.float32) / 127.5 - 1.0


def sample_latents(key: jax.Array, batch: int, latent_dim: int = 100) -> jax.Array:
    """z ~ N(0, I): `[batch, latent_dim]` float32."""
    return jax.random.normal(key, (batch, latent_dim), jnp.float32)


def _bce(logits: jax.Array, target: float) -> jax.Array:
    return optax.sigmoid_binary_cross_entropy(logits, jnp.full_like(logits, target)).mean()


def init_state(generator: Generator, discriminator: Discriminator, tx: optax.GradientTransformation,
               key: jax.Array, latent_dim: int) -> dict:
    """`{'g': vars, 'd': vars, 'g_opt': adam state, 'd_opt': adam state}` for one GAN."""
    h, w, c = generator.image_shape
    g = generator.init(jax.random.fold_in(key, 0), jnp.zeros((2, latent_dim)), train=False)
    d = discriminator.init(jax.random.fold_in(key, 1), jnp.zeros((2, h, w, c)), train=False)
    return {'g': g, 'd': d, 'g_opt': tx.init(g['params']), 'd_opt': tx.init(d['params'])}


@dataclasses.dataclass(frozen=True)
class GanTrainable:
    """One DCGAN step (the trainable of `memjax.engine.fit`; value-hashable, so it compiles once per process).

    step(state, idx [B] of the images, images uint8 [N, H, W, C], key) -> (state, losses [2]): the batch's
    (discriminator, generator) BCE; the latents come from `key`, the epoch and the step.
    """

    image_shape: tuple
    width: int
    batch_size: int
    latent_dim: int
    learning_rate: float
    beta1: float

    @property
    def networks(self) -> tuple[Generator, Discriminator]:
        return dcgan(self.image_shape, self.width)

    @property
    def tx(self) -> optax.GradientTransformation:
        return optax.adam(self.learning_rate, b1=self.beta1)

    def step(self, state, *, idx, weights, epoch, step, images, key):
        del weights  # every batch is full
        generator, discriminator = self.networks
        tx = self.tx
        real = to_unit_range(images[idx])                                # [B, H, W, C]
        z_key = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(key, 3), epoch), step)
        z = sample_latents(z_key, self.batch_size, self.latent_dim)      # [B, latent]
        g, d = state['g'], state['d']

        def g_forward(g_params):
            fake, updates = generator.apply({'params': g_params, 'batch_stats': g['batch_stats']}, z,
                                            train=True, mutable=['batch_stats'])
            return fake, updates['batch_stats']

        fake, g_vjp, g_stats = jax.vjp(g_forward, g['params'], has_aux=True)

        def d_loss(d_params):
            logits_real, up = discriminator.apply({'params': d_params, 'batch_stats': d['batch_stats']},
                                                  real, train=True, mutable=['batch_stats'])
            logits_fake, up = discriminator.apply({'params': d_params, 'batch_stats': up['batch_stats']},
                                                  jax.lax.stop_gradient(fake), train=True, mutable=['batch_stats'])
            return _bce(logits_real, 1.0) + _bce(logits_fake, 0.0), up['batch_stats']

        (loss_d, d_stats), d_grads = jax.value_and_grad(d_loss, has_aux=True)(d['params'])
        d_updates, d_opt = tx.update(d_grads, state['d_opt'], d['params'])
        d_params = optax.apply_updates(d['params'], d_updates)

        def g_loss(fake_images):
            logits, up = discriminator.apply({'params': d_params, 'batch_stats': d_stats}, fake_images,
                                             train=True, mutable=['batch_stats'])
            return _bce(logits, 1.0), up['batch_stats']

        (loss_g, d_stats), fake_grads = jax.value_and_grad(g_loss, has_aux=True)(fake)
        (g_grads,) = g_vjp(fake_grads)
        g_updates, g_opt = tx.update(g_grads, state['g_opt'], g['params'])
        g_params = optax.apply_updates(g['params'], g_updates)
        state = {'g': {'params': g_params, 'batch_stats': g_stats},
                 'd': {'params': d_params, 'batch_stats': d_stats}, 'g_opt': g_opt, 'd_opt': d_opt}
        return state, jnp.stack([loss_d, loss_g])


def _check_settings(path: str, saved: dict) -> None:
    """Raise ConfigError if directory's generator.json differs from `saved` (except epochs)."""
    with open(path) as f:
        old = json.load(f)
    different = {k: (old.get(k), v) for k, v in saved.items() if k != 'epochs' and old.get(k) != v}
    if different:
        raise ConfigError(
            f"{path} was written by a GAN training with other settings {different} (old, new); "
            "pass the same settings to resume it, or another directory for a new GAN (in a run's config: "
            "--config.analysis.dissimilarity.generator_dir=<another folder>)")


def train_generator(images: np.ndarray, directory: str, settings: GeneratorSettings = GeneratorSettings(),
                    log: Callable[[str], None] = print, async_save: bool = True) -> dict:
    """Trains (or resumes, or just loads) P4's DCGAN on `images`.

    Args:
      images: uint8 `[N, H, W, C]` training images (H, W divisible by 4; 32x32x3
        and 28x28x1 are the intended shapes), N >= batch_size.
      directory: where checkpoints and `generator.json` go (created if missing).
      settings: `GeneratorSettings` (P4: epochs 30, Adam 2e-4 / beta1 0.5).
      log: receives one line per epoch.
      async_save: orbax writes in a background thread (False: synchronous).

    Returns:
      The generator's variables `{'params': ..., 'batch_stats': ...}` after
      `settings.epochs` epochs (use with `Generator(image_shape, width)`, e.g. from
      `load_generator`, in evaluation mode).
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ConfigError(f"images must be uint8 [N, H, W, C]; got {images.dtype} {images.shape}")
    s = settings
    if images.shape[0] < s.batch_size:
        raise ConfigError(f"{images.shape[0]} images are fewer than one batch of {s.batch_size}")
    generator, discriminator = dcgan(images.shape[1:], s.width)
    saved = {**dataclasses.asdict(s), 'image_shape': list(images.shape[1:]), 'num_images': int(images.shape[0])}
    directory = os.path.abspath(directory)
    os.makedirs(directory, exist_ok=True)
    settings_path = os.path.join(directory, SETTINGS_FILE)
    if os.path.exists(settings_path):
        _check_settings(settings_path, saved)
    key = jax.random.PRNGKey(s.seed)
    state = init_state(generator, discriminator, optax.adam(s.learning_rate, b1=s.beta1), key, s.latent_dim)
    checkpoints = Checkpoints(directory, async_save=async_save)
    try:
        restored = checkpoints.restore_state(state, {'epoch': np.zeros(1, np.int32)})
        start = 0
        if restored is not None:
            start, state, _ = restored
            # Uncommitted arrays like a fresh state's, so the compiled epoch is reused.
            state = jax.tree_util.tree_map(lambda x: jnp.asarray(np.asarray(x)), state)
            if start > s.epochs:
                raise ConfigError(f"{directory} holds a GAN trained for {start} epochs, more than "
                                  f"epochs={s.epochs}; load it with load_generator or use another directory")
            log(f'resuming the GAN in {directory} after epoch {start}')
        with open(settings_path, 'w') as f:
            json.dump(saved, f, indent=2)
        trainable = GanTrainable(tuple(images.shape[1:]), s.width, s.batch_size, s.latent_dim, s.learning_rate,
                                 s.beta1)
        steps = images.shape[0] // s.batch_size

        def batches(epoch: int) -> Batches:
            order = jax.random.permutation(jax.random.fold_in(jax.random.fold_in(key, 2), epoch), images.shape[0])
            return Batches(order[:steps * s.batch_size].astype(jnp.int32), np.ones(1, int) * steps)

        class SaveEpoch:
            def before_epoch(self, fit_run, epoch):
                self.started = time.perf_counter()

            def after_epoch(self, fit_run, epoch, stacked_state, losses):
                one = jax.tree_util.tree_map(lambda x: x[0], stacked(stacked_state))
                checkpoints.save_state(epoch, one, {'epoch': np.full(1, epoch, np.int32)})
                loss_d, loss_g = (float(x) for x in losses[0])
                log(f'GAN epoch {epoch}/{s.epochs}: D loss {loss_d:.4f}, G loss {loss_g:.4f} '
                    f'({time.perf_counter() - self.started:.1f} s)')
                return stacked_state

        state = fit(trainable, jax.tree_util.tree_map(lambda x: x[None], state), epochs=range(start + 1, s.epochs + 1),
                    batches=batches, own={}, common={'images': jax.device_put(images), 'key': key}, lifting='loop',
                    batch_size=s.batch_size, hooks=[SaveEpoch()])
        state = jax.tree_util.tree_map(lambda x: x[0], stacked(state))
        # A resumed finished run saves again: its asynchronous save may have been cut off.
        checkpoints.save_epoch(s.epochs, state['g'])
    finally:
        checkpoints.close()
    return jax.tree_util.tree_map(np.asarray, state['g'])


def load_generator(directory: str) -> tuple[Generator, dict]:
    """The trained generator of `train_generator(..., directory)`.

    Returns:
      `(generator module, variables {'params', 'batch_stats'})`, NumPy leaves;
      call it as `generator.apply(variables, z [B, latent_dim], train=False)`.

    Raises:
      RunDirectoryError: no finished GAN training in `directory`.
    """
    directory = os.path.abspath(directory)
    settings_path = os.path.join(directory, SETTINGS_FILE)
    epochs_dir = os.path.join(directory, 'epochs')
    if not os.path.exists(settings_path) or not os.path.isdir(epochs_dir):
        raise RunDirectoryError(
            f"no trained generator in {directory} (missing {SETTINGS_FILE} or epochs/); train one with "
            "memjax.analysis.dissection.generator_training.train_generator(images, directory)")
    with open(settings_path) as f:
        saved = json.load(f)
    checkpoints = Checkpoints(directory, async_save=False)
    try:
        kept = checkpoints.epochs()
        if not kept:
            raise RunDirectoryError(
                f"the GAN training in {directory} has not finished (no saved generator); rerun "
                "train_generator(images, directory) with the same settings to resume it")
        variables = checkpoints.load_epoch(kept[-1])
    finally:
        checkpoints.close()
    generator = Generator(tuple(saved['image_shape']), int(saved['width']))
    return generator, variables


def generate(generator: Generator, variables: dict, z: jax.Array) -> jax.Array:
    """Evaluation-mode images `[B, H, W, C]` in [-1, 1] of latents `z [B, latent_dim]`."""
    return generator.apply(variables, z, train=False)

