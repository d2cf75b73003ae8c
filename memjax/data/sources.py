"""Where images come from: tfds by name, original files in a folder, or synthetic.

`read_source(data_config)` returns the source's own train and test splits as
uint8 arrays; `memjax.data.dataset` carves the validation split and subsets.
"""

from __future__ import annotations

import numpy as np

from memjax.data.raw_files import NUM_CLASSES, RAW_DATASETS, read_raw
from memjax.data.synthetic import synthetic_splits
from memjax.data.tfds_source import TFDS_DATASETS, read_tfds
from memjax.errors import ConfigError

SOURCES = ('raw', 'tfds', 'synthetic')


def read_source(data) -> tuple[dict, int]:
    """Reads the configured source.

    Args:
      data: the `config.data` ConfigDict (source, name, data_dir, and for
        synthetic data num_train, val_size, num_test, image_shape, num_classes).

    Returns:
      `({'train': (images uint8 [N, H, W, C], labels int32 [N]), 'test': (...)}, K)`.
    """
    if data.source not in SOURCES:
        raise ConfigError(f"unknown data.source {data.source!r}; use one of: {', '.join(SOURCES)}")
    if data.source == 'synthetic':
        if not data.num_train or not data.num_test:
            raise ConfigError("data.source='synthetic' needs data.num_train and data.num_test "
                              "(e.g. --config.data.num_train=2000 --config.data.num_test=500)")
        val = resolve_val_size(data.val_size, int(data.num_train))
        splits = synthetic_splits(int(data.num_train) + val, int(data.num_test),
                                  tuple(data.image_shape), int(data.num_classes),
                                  seed=int(data.synthetic_seed))
        return splits, int(data.num_classes)
    known = TFDS_DATASETS if data.source == 'tfds' else RAW_DATASETS
    if data.name not in known:
        raise ConfigError(f"unknown data.name {data.name!r} for data.source={data.source!r}; "
                          f"use one of: {', '.join(known)}")
    if data.source == 'tfds':
        return read_tfds(data.name, data.data_dir)
    splits = read_raw(data.name, data.data_dir)
    return splits, NUM_CLASSES[data.name]


def resolve_val_size(val_size, pool: int) -> int:
    """Validation size from the config: int count, float fraction of `pool`, or
    None for the default min(5000, 10% of pool)."""
    if val_size is None:
        return min(5000, int(round(0.1 * pool)))
    if isinstance(val_size, float):
        if not 0.0 <= val_size < 1.0:
            raise ConfigError(f"data.val_size={val_size} as a fraction must lie in [0, 1); "
                              "or give a count such as --config.data.val_size=5000")
        return int(round(val_size * pool))
    val_size = int(val_size)
    if val_size < 0:
        raise ConfigError(f"data.val_size={val_size} must not be negative")
    return val_size


def channel_statistics(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of uint8 images [N, H, W, C], in [0, 1] units."""
    pixels = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
    mean = pixels.mean(axis=0)
    std = np.maximum(pixels.std(axis=0), 1e-3)
    return mean.astype(np.float32), std.astype(np.float32)
