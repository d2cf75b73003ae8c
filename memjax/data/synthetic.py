"""Deterministic class-structured synthetic images, for tests and benchmarks.

Each class has a smooth random template (low-frequency pattern); an example is
its class template plus per-example noise and a random brightness shift, so the
classes are learnable but not trivially separable. The same arguments always
give the same bytes (NumPy PCG64).
"""

from __future__ import annotations

import numpy as np


def _templates(rng: np.random.Generator, num_classes: int, shape: tuple[int, int, int]) -> np.ndarray:
    """Smooth per-class patterns in [0, 1]: [K, H, W, C]."""
    h, w, c = shape
    coarse = rng.uniform(0.0, 1.0, (num_classes, 4, 4, c))
    ys = np.linspace(0, 3, h)
    xs = np.linspace(0, 3, w)
    y0 = np.minimum(ys.astype(int), 2)
    x0 = np.minimum(xs.astype(int), 2)
    fy = (ys - y0)[None, :, None, None]
    fx = (xs - x0)[None, None, :, None]
    top = coarse[:, y0][:, :, x0] * (1 - fx) + coarse[:, y0][:, :, x0 + 1] * fx
    bottom = coarse[:, y0 + 1][:, :, x0] * (1 - fx) + coarse[:, y0 + 1][:, :, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def synthetic_splits(num_train: int, num_test: int, image_shape=(32, 32, 3), num_classes: int = 10,
                     noise: float = 0.25, seed: int = 0) -> dict:
    """Class-structured images and balanced labels.

    Args:
      num_train, num_test: split sizes.
      image_shape: (H, W, C).
      num_classes: K.
      noise: standard deviation of the per-pixel noise (templates lie in [0, 1]).
      seed: data seed.

    Returns:
      `{'train': (images uint8 [N, H, W, C], labels int32 [N]), 'test': (...)}`.
    """
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in image_shape)
    templates = _templates(rng, num_classes, shape)
    out = {}
    for split, n in (('train', num_train), ('test', num_test)):
        labels = (np.arange(n) % num_classes).astype(np.int32)
        rng.shuffle(labels)
        pixels = templates[labels] + rng.normal(0.0, noise, (n, *shape))
        pixels += rng.uniform(-0.15, 0.15, (n, 1, 1, 1))
        out[split] = (np.clip(pixels * 255.0, 0, 255).astype(np.uint8), labels)
    return out
