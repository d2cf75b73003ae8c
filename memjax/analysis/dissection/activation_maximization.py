"""P4's GAN-regularised activation maximisation (Gu & Tresp 2019, eq. 1).

For a classifier f, a fixed generator G and class j:

    z_j* = argmax_z f_j(G(z)),    x_j* = G(z_j*),

found from starting latents z ~ N(0, I) (one per seed; P4: 100 seeds per
class) by plain gradient ascent, z <- z + lr * grad_z f_j(G(z)), lr 0.05 for
1000 iterations (P4: "optimized by Gradient Ascent with a learning rate of 0.05
for 1000 iterations"; no momentum, clipping or constraint on z is mentioned,
so none is used). f_j is the logit of class j by default (the paper's "j-th
output"), or its softmax probability (`objective='probability'`).

The generator maps to [-1, 1]; its images become pixels p = (G(z) + 1) / 2 in
[0, 1], which the classifier normalises with the data set's mean/std exactly as
the training pipeline (`classifier.pixel_classifier`). G and the classifiers
run in evaluation mode (running BatchNorm statistics), so each (replica,
class, seed) problem is independent of the others in its batch.

The (class, seed) problems of a replica are one batch `[C*S, ...]` (the
gradient of the summed objective is every problem's own gradient) and
`lax.fori_loop` runs the iterations; the replicas are lifted by
`memjax.engine.lifting` (vmap, lax.map, loop or shard, as train.strategy
says).
Seeds can be processed in chunks of `seed_chunk` (one compilation, reused) to
bound memory: R x C x seed_chunk images with their backward pass.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from memjax.engine.lifting import Lifting, lift, stacked
from memjax.errors import ConfigError
from memjax.train.pixel_classifier import Classifier

OBJECTIVES = ('logit', 'probability')


class AscentResult(NamedTuple):
    """Outcome of `maximize_activations` (R replicas, C classes, S seeds).

    Attributes:
      z: optimised latents `[R, C, S, latent_dim]`.
      images: x* = (G(z*) + 1) / 2, float pixels in [0, 1], `[R, C, S, H, W, C_img]`.
      initial: objective f_j(G(z0)) `[R, C, S]`.
      final: objective f_j(G(z*)) `[R, C, S]`.
    """

    z: np.ndarray
    images: np.ndarray
    initial: np.ndarray
    final: np.ndarray


def latents_from_seeds(seeds: Sequence[int], latent_dim: int = 100) -> jax.Array:
    """Starting points z_s ~ N(0, I) from `PRNGKey(seed_s)`: `[S, latent_dim]`."""
    return jnp.stack([jax.random.normal(jax.random.PRNGKey(int(s)), (latent_dim,), jnp.float32)
                      for s in seeds])


def generator_pixels(generator, generator_variables, z: jax.Array) -> jax.Array:
    """`z [B, latent] -> pixels [B, H, W, C]` in [0, 1] (generator in evaluation mode)."""
    return (generator.apply(generator_variables, z, train=False) + 1.0) * 0.5


def _objective_fn(classifier: Classifier, generator, objective: str) -> Callable:
    """`(variables, g_vars, z [B, L], classes [B]) -> f_{class_b}(G(z_b)) [B]`."""
    if objective not in OBJECTIVES:
        raise ConfigError(f"unknown activation-maximisation objective {objective!r}; use one of {OBJECTIVES}")

    def values(variables, g_vars, z, classes):
        logits = classifier(variables, generator_pixels(generator, g_vars, z))   # [B, K]
        if objective == 'probability':
            logits = jax.nn.softmax(logits, axis=-1)
        return jnp.take_along_axis(logits, classes[:, None], axis=1)[:, 0]

    return values


def ascend(values: Callable, variables, g_vars, z0: jax.Array, classes: jax.Array,
           iterations: int, learning_rate: float) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Gradient ascent of independent problems in one batch (one model, no replica axis).

    Args:
      values: `_objective_fn(...)`.
      z0: `[B, L]` starting latents; classes: `[B]` int class of each problem.

    Returns:
      `(z* [B, L], initial [B], final [B])`.
    """
    grad = jax.grad(lambda z: values(variables, g_vars, z, classes).sum())

    def body(_, z):
        return z + learning_rate * grad(z)

    z = jax.lax.fori_loop(0, iterations, body, z0)
    return z, values(variables, g_vars, z0, classes), values(variables, g_vars, z, classes)


@dataclasses.dataclass(frozen=True)
class Ascent:
    """The ascent of one replica's C x S problems (lifted over replicas; value-hashable, so it compiles once).

    __call__(variables, g_vars, z0 [S, L], classes [C] int) -> (z* [C, S, L], initial [C, S], final [C, S]).
    """

    classifier: Classifier
    generator: Any
    iterations: int = 1000
    learning_rate: float = 0.05
    objective: str = 'logit'

    def __call__(self, variables, g_vars, z0, classes):
        values = _objective_fn(self.classifier, self.generator, self.objective)
        c, (s, latent) = classes.shape[0], z0.shape
        z = jnp.broadcast_to(z0[None], (c, s, latent)).reshape(c * s, latent)
        labels = jnp.repeat(classes, s)
        z, initial, final = ascend(values, variables, g_vars, z, labels, self.iterations, self.learning_rate)
        return z.reshape(c, s, latent), initial.reshape(c, s), final.reshape(c, s)


@functools.lru_cache(maxsize=32)
def make_single_ascent(classifier: Classifier, generator, iterations: int = 1000, learning_rate: float = 0.05,
                       objective: str = 'logit') -> Callable:
    """One (replica, class, seed) problem at a time, for checks and the benchmark (compiled once per process).

    Returns:
      jitted `(variables of one replica, g_vars, z0 [L], class int) -> (z* [L], initial, final)`.
    """
    values = _objective_fn(classifier, generator, objective)

    def one(variables, g_vars, z0, label):
        z, initial, final = ascend(values, variables, g_vars, z0[None], jnp.asarray(label)[None],
                                   iterations, learning_rate)
        return z[0], initial[0], final[0]

    return jax.jit(one)


@functools.lru_cache(maxsize=32)
def _pixels(generator) -> Callable:
    return jax.jit(lambda g, zs: generator_pixels(generator, g, zs))


def maximize_activations(classifier: Classifier, variables: Any, generator, generator_variables: Any, *,
                         num_classes: int, seeds: Sequence[int] = tuple(range(100)), iterations: int = 1000,
                         learning_rate: float = 0.05, objective: str = 'logit', seed_chunk: int | None = None,
                         latent_dim: int = 100, classes: Sequence[int] | None = None,
                         lifting: Lifting | str = 'vmap') -> AscentResult:
    """x_j* = G(argmax_z f_j(G(z))) for every replica, class and seed (P4 eq. 1).

    Args:
      classifier: `f(variables, pixels [B, H, W, C] in [0, 1]) -> logits [B, K]`
        (`ModelRunner.pixel_logits`; a value-hashable callable compiles once per process).
      variables: classifier variables stacked over replicas, leaves `[R, ...]`.
      generator, generator_variables: the fixed DCGAN generator (e.g. from
        `generator_training.load_generator`); `[B, latent_dim] -> [B, H, W, C]`.
      num_classes: C; the classes 0..C-1 are maximised (or `classes`).
      seeds: S seeds of the starting latents (`latents_from_seeds`), the same
        for every replica and class (P4: 100).
      iterations, learning_rate: plain gradient ascent (P4: 1000, 0.05).
      objective: 'logit' (default) or 'probability' (softmax).
      seed_chunk: seeds per compiled call (None: all at once); the last chunk is
        padded and the padding dropped.
      latent_dim: size of z (100 in P4).
      classes: the classes to maximise (then C = len(classes) and `num_classes`
        is ignored); default 0..num_classes-1.
      lifting: how the replicas are lifted (`memjax.engine.lifting`; 'map' or 'loop' on a CPU, where
        vmapped per-replica convolutions become slow grouped convolutions).

    Returns:
      An `AscentResult` with NumPy arrays `[R, C, S, ...]`.
    """
    if objective not in OBJECTIVES:
        raise ConfigError(f"unknown activation-maximisation objective {objective!r}; use one of {OBJECTIVES}")
    classes = jnp.arange(num_classes) if classes is None else jnp.asarray(classes, jnp.int32)
    z0 = latents_from_seeds(seeds, latent_dim)                        # [S, L]
    s = z0.shape[0]
    chunk = s if not seed_chunk else min(int(seed_chunk), s)
    padded = -(-s // chunk) * chunk
    if padded > s:
        z0 = jnp.concatenate([z0, jnp.zeros((padded - s, latent_dim), z0.dtype)])
    program = lift(Ascent(classifier, generator, iterations, learning_rate, objective), ('variables',), lifting)
    parts = [stacked(program(variables=variables, g_vars=generator_variables, z0=z0[i:i + chunk], classes=classes))
             for i in range(0, padded, chunk)]
    z, initial, final = (np.concatenate([np.asarray(p[k]) for p in parts], axis=2)[:, :, :s] for k in range(3))
    r, c = z.shape[:2]
    images = np.asarray(_pixels(generator)(generator_variables, jnp.asarray(z.reshape(r * c * s, -1))))
    return AscentResult(z, images.reshape(r, c, s, *images.shape[1:]), initial, final)
