"""P4's input-gradient magnitude (Gu & Tresp 2019, section 2).

For an example x with label y and the cross-entropy loss of that example,
L(x) = -log softmax(f(x))_y,

    G(x) = sum_j |dL/dx_j|   (over all H x W x C input dimensions),

averaged over a set of examples, per replica. P4: "Given the training loss L
and a training data point x, ... We record G(x) during training and average
them over all training examples". Two definitions (`DEFINITIONS`, the config
key `train.input_gradient_definition`, named in every result row):

- 'train_normalised' (P4's): x is the model's input, the normalised image
  z = (p - mean) / std (the tensor a PyTorch model receives after
  `Normalize`); training mode (BatchNorm normalises with the statistics of the
  batch, batches of `train.batch_size` in index order; the running averages
  are not updated); every training example (`train.input_gradient_examples=0`)
  with each replica's training labels. Units: nats per unit of normalised
  input (one standard deviation of the channel).
- 'eval_pixels' (memjax's earlier default): x is the pixel p = image / 255 in
  [0, 1] (the loss goes through the normalisation, so dL/dp = (dL/dz) / std
  per channel); evaluation mode (running statistics), so G(x) belongs to x and
  the model alone; the first n training examples. Units: nats per unit of
  [0, 1] pixel value (divide by 255 for uint8 units).

In training mode an example's gradient includes its effect on the batch
statistics: G(x) is computed from the gradient of the batch's summed loss,
which is B times the gradient of the batch-mean loss a training step uses.
Memjax measures G once per epoch, after the epoch's steps (P4 records it
"during training"; the parameters are those at the epoch's end), with every
replica's own labels (noisy labels for a replica trained on noisy data):
`labels [R, N]` per replica, or `[N]` for all.

All replicas are one lifted program per batch of examples (`memjax.engine.lifting`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from memjax.engine.lifting import Lifting, count, host, lift, stacked
from memjax.engine.runner import ModelRunner
from memjax.errors import ConfigError
from memjax.train.pixel_classifier import Classifier, pixel_classifier


class InputGradients(NamedTuple):
    """`mean`: G averaged over the examples `[R]`; `per_example`: G(x) `[R, N]`."""

    mean: np.ndarray
    per_example: np.ndarray


def example_gradient_magnitude(classifier: Classifier, variables: Any, inputs: jax.Array,
                               labels: jax.Array) -> jax.Array:
    """G(x) of one model: `inputs [B, H, W, C]` (the classifier's input space), `labels [B]` -> `[B]`."""
    grads = loss_gradient(classifier, variables, inputs, labels)
    return jnp.abs(grads).reshape(grads.shape[0], -1).sum(axis=1)


@dataclasses.dataclass(frozen=True)
class Definition:
    """How G is measured: the input space ('normalised' or 'pixels'), the mode, and its units."""

    name: str
    space: str
    train: bool
    units: str


DEFINITIONS = {
    'train_normalised': Definition('train_normalised', 'normalised', True,
                                   'nats per unit of normalised input (x - mean) / std'),
    'eval_pixels': Definition('eval_pixels', 'pixels', False, 'nats per unit of pixel value in [0, 1]'),
}


def definition(name: str) -> Definition:
    if name not in DEFINITIONS:
        raise ConfigError(f"input-gradient definition {name!r} is not one of {', '.join(DEFINITIONS)}")
    return DEFINITIONS[name]


def to_input_space(images: np.ndarray, mean, std, space: str) -> np.ndarray:
    """uint8 `[N, H, W, C]` -> float32 `[N, H, W, C]`: pixels in [0, 1] or the normalised input."""
    pixels = np.asarray(images).astype(np.float32) / 255.0
    if space == 'pixels':
        return pixels
    return (pixels - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def input_classifier(model, mean, std, d: Definition) -> Classifier:
    """`f(variables, x [B, H, W, C] in d's space) -> logits [B, K]` in d's mode (running averages unchanged)."""
    if d.space == 'pixels' and not d.train:
        return pixel_classifier(model, mean, std)
    mean, std = jnp.asarray(mean, jnp.float32), jnp.asarray(std, jnp.float32)

    def apply(variables, x):
        if d.space == 'pixels':
            x = (x - mean) / std
        return model.apply(variables, x.astype(model.dtype), train=d.train).output.astype(jnp.float32)

    return apply


def loss_gradient(classifier: Classifier, variables: Any, inputs: jax.Array, labels: jax.Array) -> jax.Array:
    """d(sum of the batch's cross-entropy losses)/d inputs: `[B, H, W, C]` (`labels [B]`)."""

    def total_loss(x):
        log_probs = jax.nn.log_softmax(classifier(variables, x).astype(jnp.float32), axis=-1)
        return -jnp.take_along_axis(log_probs, labels[:, None], axis=1).sum()

    return jax.grad(total_loss)(inputs)


@dataclasses.dataclass(frozen=True)
class GradientMagnitude:
    """G(x) of one model on a batch: inputs [B, H, W, C] in the definition's space, labels [B] -> [B]."""

    runner: ModelRunner
    definition: Definition

    def __call__(self, variables, inputs, labels):
        runner = self.runner
        classifier = input_classifier(runner.model, runner.mean, runner.std, self.definition)
        return example_gradient_magnitude(classifier, variables, inputs, labels)


class InputGradientMeter:
    """G averaged over a fixed example set, per replica, with one lifted program reused every epoch.

    Args:
      runner: the run's model and normalisation (`memjax.engine.runner.runner_for`).
      images: uint8 [n, H, W, C], the fixed subset (the first n training examples).
      labels: int [R, n], each replica's training labels of those examples.
      definition_name: a name of `DEFINITIONS` (default: the pixels, evaluation mode).
      lifting: how the replicas are lifted (`memjax.engine.lifting`).
      batch_size: examples per compiled call (training mode: the BatchNorm batch;
        a last, smaller batch is its own batch, never padded).
    """

    def __init__(self, runner: ModelRunner, images: np.ndarray, labels: np.ndarray,
                 definition_name: str = 'eval_pixels', lifting: Lifting | str = 'vmap', batch_size: int = 256):
        self.definition = definition(definition_name)
        self.batch = min(int(batch_size), images.shape[0])
        self.inputs = jnp.asarray(to_input_space(images, runner.mean, runner.std, self.definition.space))
        self.labels = jnp.asarray(labels, jnp.int32)
        self._program = lift(GradientMagnitude(runner, self.definition), ('variables', 'labels'), lifting)

    def __call__(self, variables) -> np.ndarray:
        """mean G [R] of the replicas (variables [R, ...] in any lifting layout)."""
        parts = [host(stacked(self._program(variables=variables, inputs=self.inputs[i:i + self.batch],
                                                  labels=self.labels[:, i:i + self.batch])))
                 for i in range(0, self.inputs.shape[0], self.batch)]
        return np.concatenate(parts, axis=1).mean(axis=1)


def input_gradient_magnitude(classifier: Classifier, variables: Any, images: Any, labels: Any,
                             batch_size: int = 256, lifting: Lifting | str = 'vmap') -> InputGradients:
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
    r = count(variables)
    labels = np.asarray(labels, np.int32)
    if labels.ndim == 1:
        labels = np.broadcast_to(labels, (r, n))
    if labels.shape != (r, n):
        raise ConfigError(f"labels must be [N={n}] or [R={r}, N={n}]; got {labels.shape}")
    program = lift(functools.partial(example_gradient_magnitude, classifier), ('variables', 'labels'), lifting)
    batch = min(int(batch_size), n)
    out = []
    for first in range(0, n, batch):
        x, y = pixels[first:first + batch], labels[:, first:first + batch]
        width = x.shape[0]
        if width < batch:
            x = np.concatenate([x, np.zeros((batch - width, *x.shape[1:]), x.dtype)])
            y = np.concatenate([y, np.zeros((r, batch - width), y.dtype)], axis=1)
        out.append(np.asarray(stacked(program(variables=variables, inputs=jnp.asarray(x),
                                              labels=jnp.asarray(y))))[:, :width])
    per_example = np.concatenate(out, axis=1)
    return InputGradients(per_example.mean(axis=1), per_example)
