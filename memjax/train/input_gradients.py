"""P4's input-gradient magnitude (Gu & Tresp 2019, section 2).

For an example x with label y and the cross-entropy loss of that example,
L(x) = -log softmax(f(x))_y,

    G(x) = sum_j |dL/dx_j|   (over all H x W x C input dimensions),

averaged over a set of examples (P4: the training set, every epoch), per
replica. Conventions:

- Input space: pixels p = x / 255 in [0, 1], before normalisation; the loss is
  computed through memjax's normalisation (p - mean) / std
  (`classifier.pixel_classifier`), so dL/dp = (dL/d normalised input) / std.
  Values are in these units: multiply by 255 for uint8 units, or by std for the
  normalised input.
- Evaluation mode: BatchNorm uses its running statistics (no dropout), so G(x)
  is a property of x and the model alone, not of the batch x arrived in; the
  loss is each example's own (not divided by the batch size).
- Labels are the ones the model was trained on (noisy labels for a replica
  trained on noisy data): `labels [R, N]` per replica, or `[N]` for all.

All replicas are one vmapped program per batch of examples (variables `[R, ...]`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from memjax.train.pixel_classifier import Classifier, pixel_classifier
from memjax.errors import ConfigError


class InputGradients(NamedTuple):
    """`mean`: G averaged over the examples `[R]`; `per_example`: G(x) `[R, N]`."""

    mean: np.ndarray
    per_example: np.ndarray


def example_gradient_magnitude(classifier: Classifier, variables: Any, pixels: jax.Array,
                               labels: jax.Array) -> jax.Array:
    """G(x) of one model: `pixels [B, H, W, C]` in [0, 1], `labels [B]` -> `[B]`."""

    def total_loss(p):
        logits = classifier(variables, p)
        log_probs = jax.nn.log_softmax(logits, axis=-1)
        return -jnp.take_along_axis(log_probs, labels[:, None], axis=1).sum()

    grads = jax.grad(total_loss)(pixels)
    return jnp.abs(grads).reshape(grads.shape[0], -1).sum(axis=1)


class InputGradientMeter:
    """G averaged over a fixed example set, per replica, with one compiled program reused every epoch.

    Args:
      model, mean, std: the run's model and normalisation.
      images: uint8 [n, H, W, C], the fixed subset (the first n training examples).
      labels: int [R, n], each replica's training labels of those examples.
      batch_size: examples per compiled call.
    """

    def __init__(self, model, mean, std, images: np.ndarray, labels: np.ndarray, batch_size: int = 256):

        classifier = pixel_classifier(model, mean, std)
        self.batch = min(int(batch_size), images.shape[0])
        n = images.shape[0]
        pad = -n % self.batch
        pixels = images.astype(np.float32) / 255.0
        self.pixels = jnp.asarray(np.concatenate([pixels, np.zeros((pad, *pixels.shape[1:]), np.float32)]))
        self.labels = jnp.asarray(np.concatenate([labels, np.zeros((labels.shape[0], pad), labels.dtype)], 1),
                                  jnp.int32)
        self.n = n
        self._program = jax.jit(jax.vmap(lambda v, x, y: example_gradient_magnitude(classifier, v, x, y),
                                         in_axes=(0, None, 0)))

    def __call__(self, stacked_variables) -> np.ndarray:
        """mean G [R] of the replicas (variables stacked [R, ...])."""
        parts = [self._program(stacked_variables, self.pixels[i:i + self.batch], self.labels[:, i:i + self.batch])
                 for i in range(0, self.pixels.shape[0], self.batch)]
        return np.asarray(jnp.concatenate(parts, axis=1))[:, :self.n].mean(axis=1)


def input_gradient_magnitude(classifier: Classifier, variables: Any, images: Any, labels: Any,
                             batch_size: int = 256) -> InputGradients:
    """G(x) for every replica and example, and its mean over the examples.

    Args:
      classifier: `f(variables, pixels [B, H, W, C] in [0, 1]) -> logits [B, K]`
        (`classifier.pixel_classifier(model, mean, std)`).
      variables: stacked over replicas, leaves `[R, ...]`.
      images: uint8 `[N, H, W, C]` (scaled by 1/255) or float pixels in [0, 1].
      labels: int `[R, N]` (each replica's training labels) or `[N]` (shared).
      batch_size: examples per compiled call (the last batch is padded).

    Returns:
      `InputGradients(mean [R], per_example [R, N])`.
    """
    images = np.asarray(images)
    pixels = images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images.astype(np.float32)
    n = pixels.shape[0]
    r = int(jax.tree_util.tree_leaves(variables)[0].shape[0])
    labels = np.asarray(labels, np.int32)
    if labels.ndim == 1:
        labels = np.broadcast_to(labels, (r, n))
    if labels.shape != (r, n):
        raise ConfigError(f"labels must be [N={n}] or [R={r}, N={n}]; got {labels.shape}")
    program = jax.jit(jax.vmap(lambda v, x, y: example_gradient_magnitude(classifier, v, x, y),
                               in_axes=(0, None, 0)))
    batch = min(int(batch_size), n)
    out = []
    for first in range(0, n, batch):
        x, y = pixels[first:first + batch], labels[:, first:first + batch]
        width = x.shape[0]
        if width < batch:
            x = np.concatenate([x, np.zeros((batch - width, *x.shape[1:]), x.dtype)])
            y = np.concatenate([y, np.zeros((r, batch - width), y.dtype)], axis=1)
        out.append(np.asarray(program(variables, jnp.asarray(x), jnp.asarray(y)))[:, :width])
    per_example = np.concatenate(out, axis=1)
    return InputGradients(per_example.mean(axis=1), per_example)
