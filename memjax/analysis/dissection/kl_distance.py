"""P4's function dissimilarity (Gu & Tresp 2019, eq. 2).

For models a and b and a's maximising images x_{a,j,s}* (class j, seed s, from
`activation_maximization.maximize_activations` with a as f1):

    Dist_s(a, b) = (1/C) sum_j KL( softmax f_a(x_{a,j,s}*) || softmax f_b(x_{a,j,s}*) ),

reported as the mean and the standard deviation (ddof = 0) over seeds s. Dist is
asymmetric (the images are always a's) and Dist(a, a) = 0. KL is computed from
logits with log_softmax (no exp/log round trip of probabilities).

Batched: for a group of R_a replicas (one architecture, variables `[R_a, ...]`)
and a group of R_b, one compiled program evaluates every model b on every
model a's images (`jax.vmap` over both replica axes) and returns `[R_a, R_b]`
matrices. Groups of different architectures (other runs) are combined by
`dissimilarity_matrix`, one compiled program per ordered pair of groups.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from memjax.train.pixel_classifier import Classifier, ModelGroup
from memjax.errors import ConfigError


class Dissimilarity(NamedTuple):
    """Dist(a, b) over seeds: `mean`, `std` `[R_a, R_b]`, `per_seed` `[R_a, R_b, S]`
    (row a: whose maximising images; column b: the model evaluated on them)."""

    mean: np.ndarray
    std: np.ndarray
    per_seed: np.ndarray


def kl_divergence(p_logits: jax.Array, q_logits: jax.Array) -> jax.Array:
    """KL(softmax p || softmax q) over the last axis: `[..., K], [..., K] -> [...]`."""
    log_p = jax.nn.log_softmax(p_logits.astype(jnp.float32), axis=-1)
    log_q = jax.nn.log_softmax(q_logits.astype(jnp.float32), axis=-1)
    return jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)


def make_pair_program(classifier_a: Classifier, classifier_b: Classifier) -> Callable:
    """jitted `(variables_a [R_a, ...], images [R_a, C, S, H, W, Ci], variables_b [R_b, ...])
    -> Dist_s [R_a, R_b, S]` (the mean over classes of the per-image KL)."""

    def logits_of(classifier, variables, images):              # images [C, S, H, W, Ci] -> [C, S, K]
        c, s = images.shape[:2]
        return classifier(variables, images.reshape(c * s, *images.shape[2:])).reshape(c, s, -1)

    def program(variables_a, images, variables_b):
        own = jax.vmap(lambda v, x: logits_of(classifier_a, v, x))(variables_a, images)     # [R_a, C, S, K]
        other = jax.vmap(lambda x: jax.vmap(lambda v: logits_of(classifier_b, v, x))(variables_b))(images)
        kl = kl_divergence(own[:, None], other)                                            # [R_a, R_b, C, S]
        return kl.mean(axis=2)

    return jax.jit(program)


def as_group(group: ModelGroup | tuple) -> ModelGroup:
    """A `ModelGroup` from itself or a plain `(apply_fn, variables[, name])` tuple."""
    return group if isinstance(group, ModelGroup) else ModelGroup(*group)


def dissimilarity(group_a: ModelGroup, images: Any, group_b: ModelGroup | None = None,
                  seed_chunk: int | None = None) -> Dissimilarity:
    """Dist(a, b) for every replica a of `group_a` and b of `group_b` (default: group_a).

    Args:
      group_a: the models f1 whose maximising images are used (`[R_a, ...]`).
      images: a's maximising images, pixels in [0, 1], `[R_a, C, S, H, W, C_img]`
        (`AscentResult.images`).
      group_b: the models f2 evaluated on them (`[R_b, ...]`).
      seed_chunk: seeds per compiled call (None: all); bounds memory at
        R_a x R_b x C x seed_chunk forward passes.

    Returns:
      `Dissimilarity` with `[R_a, R_b]` mean and std over seeds.
    """
    group_a = as_group(group_a)
    group_b = group_a if group_b is None else as_group(group_b)
    images = jnp.asarray(images, jnp.float32)
    if images.ndim != 6 or images.shape[0] != group_a.num_replicas:
        raise ConfigError(f"images must be [R_a={group_a.num_replicas}, C, S, H, W, C_img]; got {images.shape}")
    program = make_pair_program(group_a.classifier, group_b.classifier)
    s = images.shape[2]
    chunk = s if not seed_chunk else min(int(seed_chunk), s)
    parts = []
    for first in range(0, s, chunk):
        part = images[:, :, first:first + chunk]
        width = part.shape[2]
        if width < chunk:  # pad to the compiled shape, drop afterwards
            part = jnp.concatenate([part, jnp.repeat(part[:, :, -1:], chunk - width, axis=2)], axis=2)
        parts.append(np.asarray(program(group_a.variables, part, group_b.variables))[:, :, :width])
    per_seed = np.concatenate(parts, axis=2)
    return Dissimilarity(per_seed.mean(axis=2), per_seed.std(axis=2), per_seed)


def dissimilarity_matrix(groups: Sequence[ModelGroup], images: Sequence[Any],
                         seed_chunk: int | None = None) -> Dissimilarity:
    """Dist between all models of several groups (e.g. VGG11 seeds, VGG13, ResNet-32).

    Args:
      groups: `ModelGroup`s or `(apply_fn, variables [R_g, ...])` tuples,
        possibly of different architectures; the replicas
        of all groups, in order, index the rows and columns.
      images: per group, its maximising images `[R_g, C, S, H, W, C_img]` (same
        C and S for all groups).

    Returns:
      `Dissimilarity` with `[R_total, R_total]` matrices (row: images' owner).
    """
    if len(groups) != len(images):
        raise ConfigError(f"{len(groups)} model groups but {len(images)} image sets")
    groups = [as_group(g) for g in groups]
    rows = []
    for group_a, images_a in zip(groups, images):
        blocks = [dissimilarity(group_a, images_a, group_b, seed_chunk).per_seed for group_b in groups]
        rows.append(np.concatenate(blocks, axis=1))
    per_seed = np.concatenate(rows, axis=0)
    return Dissimilarity(per_seed.mean(axis=2), per_seed.std(axis=2), per_seed)
