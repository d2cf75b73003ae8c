"""On-device input pipeline: shuffling, augmentation and normalisation.

Images stay on the accelerator as uint8 for the whole run; these functions run
inside the compiled training step, so there is no host-side per-batch work.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# Sub-streams of a replica's data key.
_ORDER, _AUGMENT, _DROPOUT = 0, 1, 2


def epoch_order(data_key: jax.Array, epoch: int | jax.Array, num_examples: int) -> jax.Array:
    """The permutation int32 [N] in which one replica visits the training set in `epoch`."""
    key = jax.random.fold_in(jax.random.fold_in(data_key, _ORDER), epoch)
    return jax.random.permutation(key, num_examples).astype(jnp.int32)


def augment_key(data_key: jax.Array, epoch, step) -> jax.Array:
    """Key of the augmentation of batch `step` of `epoch` (same for every replica sharing data_key)."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(data_key, _AUGMENT), epoch), step)


def dropout_key(data_key: jax.Array, epoch, step) -> jax.Array:
    """Key of the model's dropout in batch `step` of `epoch` (a function of the replica's data key,
    the epoch and the step only, so a resumed run draws the same masks)."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(data_key, _DROPOUT), epoch), step)


def normalize(images: jax.Array, mean: jax.Array, std: jax.Array, dtype=jnp.float32) -> jax.Array:
    """uint8 [B, H, W, C] -> dtype [B, H, W, C], (x / 255 - mean) / std per channel."""
    x = images.astype(jnp.float32) / 255.0
    return ((x - mean) / std).astype(dtype)


def random_crop_flip(images: jax.Array, key: jax.Array, pad: int = 4) -> jax.Array:
    """Random crop after zero-padding by `pad` pixels, and a random horizontal flip.

    Args:
      images: [B, H, W, C] (any dtype).
      key: PRNG key; each example draws its own offset and flip.

    Returns:
      [B, H, W, C], same dtype.
    """
    b, h, w, _ = images.shape
    crop_key, flip_key = jax.random.split(key)
    offsets = jax.random.randint(crop_key, (b, 2), 0, 2 * pad + 1)
    flips = jax.random.bernoulli(flip_key, 0.5, (b,))
    padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))

    def one(image, offset, flip):
        crop = jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (h, w, image.shape[-1]))
        return jnp.where(flip, crop[:, ::-1], crop)

    return jax.vmap(one)(padded, offsets, flips)
