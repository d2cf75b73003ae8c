"""A run's data: train / validation / test splits as uint8 arrays with a record.

The validation split is carved from the source's training split by a seeded
shuffle and is never trained on (stitching trains on it later). The training
subset (`data.num_train`) and the test subset (`data.num_test`) are taken from
the same shuffle, so a run's splits are identical every time it is loaded.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from memjax.data.sources import channel_statistics, read_source, resolve_val_size
from memjax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Images and correct labels of one run.

    Attributes:
      name: data set name.
      num_classes: K.
      train_images: uint8 [N, H, W, C]; train_labels: int32 [N] (true labels).
      val_images: uint8 [V, H, W, C]; val_labels: int32 [V].
      test_images: uint8 [M, H, W, C]; test_labels: int32 [M].
      train_index / val_index: int64 positions in the source's training split;
        test_index: positions in its test split.
      mean, std: float32 [C] per-channel statistics of the training subset, in
        [0, 1] pixel units (normalisation happens on the device).
    """

    name: str
    num_classes: int
    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    train_index: np.ndarray
    val_index: np.ndarray
    test_index: np.ndarray
    mean: np.ndarray
    std: np.ndarray

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_images.shape[1:])

    @property
    def num_train(self) -> int:
        return int(self.train_images.shape[0])

    def summary(self) -> dict:
        return {'name': self.name, 'num_classes': self.num_classes, 'image_shape': list(self.image_shape),
                'num_train': self.num_train, 'num_val': int(self.val_images.shape[0]),
                'num_test': int(self.test_images.shape[0]),
                'mean': self.mean.tolist(), 'std': self.std.tolist()}


def load_dataset(data) -> Dataset:
    """Reads the configured source and carves the splits (see module docstring)."""
    splits, num_classes = read_source(data)
    images, labels = splits['train']
    test_images, test_labels = splits['test']
    pool = images.shape[0]
    if data.source == 'synthetic':  # generated with exactly num_train + validation examples
        num_val = pool - int(data.num_train)
    else:
        num_val = resolve_val_size(data.val_size, pool)
    if num_val >= pool:
        raise ConfigError(f"data.val_size={num_val} is not smaller than the {pool}-example training "
                          f"split of {data.name!r}; use a smaller --config.data.val_size")
    rng = np.random.default_rng(int(data.split_seed))
    order = rng.permutation(pool)
    val_index = np.sort(order[:num_val])
    rest = order[num_val:]
    if data.num_train is not None:
        if not 0 < int(data.num_train) <= rest.size:
            raise ConfigError(
                f"data.num_train={data.num_train} must be between 1 and the {rest.size} training examples "
                f"left after the {num_val}-example validation split; lower it or set it to None for all")
        rest = rest[:int(data.num_train)]
    train_index = np.sort(rest)
    test_index = np.arange(test_images.shape[0])
    if data.num_test is not None:
        if not 0 < int(data.num_test) <= test_index.size:
            raise ConfigError(f"data.num_test={data.num_test} must be between 1 and {test_index.size}, "
                              "the size of the test split; or None for all")
        test_index = np.sort(np.random.default_rng(int(data.split_seed) + 1).permutation(
            test_index.size)[:int(data.num_test)])
    train_images = np.ascontiguousarray(images[train_index])
    mean, std = channel_statistics(train_images)
    name = 'synthetic' if data.source == 'synthetic' else data.name
    return Dataset(name, int(num_classes), train_images, labels[train_index].astype(np.int32),
                   np.ascontiguousarray(images[val_index]), labels[val_index].astype(np.int32),
                   np.ascontiguousarray(test_images[test_index]), test_labels[test_index].astype(np.int32),
                   train_index, val_index, test_index, mean, std)
