"""P4's function dissimilarity (Gu & Tresp 2019, eq. 2).

For models a and b and a's maximising images x_{a,j,s}* (class j, seed s, from
`activation_maximization.maximize_activations` with a as f1):

    Dist_s(a, b) = (1/C) sum_j KL( softmax f_a(x_{a,j,s}*) || softmax f_b(x_{a,j,s}*) ),

reported as the mean and the standard deviation (ddof = 0) over seeds s. Dist is
asymmetric (the images are always a's) and Dist(a, a) = 0. KL is computed from
logits with log_softmax (no exp/log round trip of probabilities).

Batched: for a group of R_a replicas (one architecture, variables `[R_a, ...]`)
and a group of R_b, one lifted program (`memjax.engine.lifting`) evaluates
every model a on its own images and one every model b on all of a's images;
`[R_a, R_b]` matrices follow. Groups of different architectures (other runs)
are combined by `dissimilarity_matrix`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from memjax.engine.lifting import Lifting, lift, stacked
from memjax.errors import ConfigError
from memjax.train.pixel_classifier import Classifier, ModelGroup


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


@dataclasses.dataclass(frozen=True)
class ImageLogits:
    """One model's logits of images [..., H, W, C_img] in [0, 1]: [..., K] (lifted over models)."""

    classifier: Classifier

    def __call__(self, variables, images):
        lead = images.shape[:-3]
        flat = images.reshape((-1, *images.shape[-3:]))
        return self.classifier(variables, flat).astype(jnp.float32).reshape((*lead, -1))


def pair_dissimilarity(group_a: ModelGroup, images: jax.Array, group_b: ModelGroup, lifting) -> np.ndarray:
    """Dist_s(a, b) [R_a, R_b, S] of one chunk of a's images [R_a, C, S, H, W, C_img]: every model a on its own
    images and every model b on all of them (two lifted programs), then the mean over classes of the KL."""
    own = stacked(lift(ImageLogits(group_a.classifier), ('variables', 'images'), lifting)(
        variables=group_a.variables, images=images))                                          # [R_a, C, S, K]
    other = stacked(lift(ImageLogits(group_b.classifier), ('variables',), lifting)(
        variables=group_b.variables, images=images))                                          # [R_b, R_a, C, S, K]
    kl = kl_divergence(jnp.asarray(own)[:, None], jnp.moveaxis(jnp.asarray(other), 0, 1))     # [R_a, R_b, C, S]
    return np.asarray(kl.mean(axis=2))


def as_group(group: ModelGroup | tuple) -> ModelGroup:
    """A `ModelGroup` from itself or a plain `(apply_fn, variables[, name])` tuple."""
    return group if isinstance(group, ModelGroup) else ModelGroup(*group)


def dissimilarity(group_a: ModelGroup, images: Any, group_b: ModelGroup | None = None,
                  seed_chunk: int | None = None, lifting: Lifting | str = 'vmap') -> Dissimilarity:
    """Dist(a, b) for every replica a of `group_a` and b of `group_b` (default: group_a).

    Args:
      group_a: the models f1 whose maximising images are used (`[R_a, ...]`).
      images: a's maximising images, pixels in [0, 1], `[R_a, C, S, H, W, C_img]`
        (`AscentResult.images`).
      group_b: the models f2 evaluated on them (`[R_b, ...]`).
      seed_chunk: seeds per compiled call (None: all); bounds memory at
        R_a x R_b x C x seed_chunk forward passes.
      lifting: how the models are lifted (`memjax.engine.lifting`).

    Returns:
      `Dissimilarity` with `[R_a, R_b]` mean and std over seeds.
    """
    group_a = as_group(group_a)
    group_b = group_a if group_b is None else as_group(group_b)
    images = jnp.asarray(images, jnp.float32)
    if images.ndim != 6 or images.shape[0] != group_a.num_replicas:
        raise ConfigError(f"images must be [R_a={group_a.num_replicas}, C, S, H, W, C_img]; got {images.shape}")
    s = images.shape[2]
    chunk = s if not seed_chunk else min(int(seed_chunk), s)
    parts = []
    for first in range(0, s, chunk):
        part = images[:, :, first:first + chunk]
        width = part.shape[2]
        if width < chunk:  # pad to the compiled shape, drop afterwards
            part = jnp.concatenate([part, jnp.repeat(part[:, :, -1:], chunk - width, axis=2)], axis=2)
        parts.append(pair_dissimilarity(group_a, part, group_b, lifting)[:, :, :width])
    per_seed = np.concatenate(parts, axis=2)
    return Dissimilarity(per_seed.mean(axis=2), per_seed.std(axis=2), per_seed)


def dissimilarity_matrix(groups: Sequence[ModelGroup], images: Sequence[Any],
                         seed_chunk: int | None = None, lifting: Lifting | str = 'vmap') -> Dissimilarity:
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
        blocks = [dissimilarity(group_a, images_a, group_b, seed_chunk, lifting).per_seed for group_b in groups]
        rows.append(np.concatenate(blocks, axis=1))
    per_seed = np.concatenate(rows, axis=0)
    return Dissimilarity(per_seed.mean(axis=2), per_seed.std(axis=2), per_seed)
