"""Classifiers as functions of pixels in [0, 1], the input space of P4's analyses.

memjax trains on uint8 images normalised by `memjax.data.pipeline.normalize`,
`(x / 255 - mean) / std`. P4's analyses differentiate with respect to the
image, so they feed pixels `p = x / 255` in [0, 1] as floats and apply the same
normalisation inside the function: for a uint8 image the logits are exactly the
training pipeline's, and gradients flow through the normalisation (a gradient
with respect to p is the one with respect to the normalised input divided by
std). Models run in evaluation mode (BatchNorm running statistics, no
dropout): each example's output depends on that example alone, so a batch is
a stack of independent problems and per-example gradients are the gradient of
the summed objective.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from memjax.models.stages import StagedModel

# (variables of one model, pixels [B, H, W, C] float in [0, 1]) -> logits [B, K] float32
Classifier = Callable[[Any, jax.Array], jax.Array]


def pixel_classifier(model: StagedModel, mean, std) -> Classifier:
    """`f(variables, pixels [B, H, W, C] in [0, 1]) -> logits [B, K]`, evaluation mode.

    Args:
      model: the `StagedModel`.
      mean, std: the data set's per-channel normalisation `[C]` (`Dataset.mean/std`).
    """
    mean = jnp.asarray(mean, jnp.float32)
    std = jnp.asarray(std, jnp.float32)

    def apply(variables, pixels):
        x = ((pixels.astype(jnp.float32) - mean) / std).astype(model.dtype)
        return model.apply(variables, x, train=False).output

    return apply


class ModelGroup(NamedTuple):
    """Replicas of one architecture: `classifier` (a `Classifier`) and `variables`
    stacked on a leading replica axis `[R, ...]`; `name` labels it in reports."""

    classifier: Classifier
    variables: Any
    name: str = ''

    @property
    def num_replicas(self) -> int:
        return int(jax.tree_util.tree_leaves(self.variables)[0].shape[0])


def stack_variables(variables: list) -> Any:
    """`[tree, ...]` (R single models) -> one tree with leaves `[R, ...]`."""
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *variables)
