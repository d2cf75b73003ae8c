"""What start-up checks may know of a run's data, right after it loads and before anything trains.

Analysis settings that depend on the data (class indices, how many examples a
class has, which noise ratios the run has) are checked against these facts
(`AnalysisSettings.check_data`), so a bad value is refused before training, not
after it.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class DataFacts:
    """A run's data and replicas, as the checks see them.

    Attributes:
      name: the data set's name.
      num_classes: C.
      image_shape: (H, W, C_img).
      split_sizes: {'train': N, 'val': V, 'test': M}.
      noise_ratios: the replicas' r, in replica order (R of them).
      seeds: the replicas' seeds.
      true_labels: int [N] training labels.
      labels: int [R, N] each replica's training labels.
      noise_mask: bool [R, N] each replica's relabelled examples.
    """

    name: str
    num_classes: int
    image_shape: tuple
    split_sizes: dict
    noise_ratios: tuple
    seeds: tuple
    true_labels: np.ndarray
    labels: np.ndarray
    noise_mask: np.ndarray

    def clean_class_counts(self) -> np.ndarray:
        """int [R, C]: each replica's unrelabelled training examples per (true) class."""
        return np.stack([np.bincount(self.true_labels[~mask], minlength=self.num_classes)
                         for mask in self.noise_mask])

    def noisy_class_counts(self) -> np.ndarray:
        """int [R, C]: each replica's relabelled training examples per (noisy) label."""
        return np.stack([np.bincount(labels[mask], minlength=self.num_classes)
                         for labels, mask in zip(self.labels, self.noise_mask)])


def data_facts(dataset, noise_ratios, seeds, labels, noise_mask) -> DataFacts:
    """DataFacts of a loaded `memjax.data.dataset.Dataset` and the replicas' labels [R, N] and mask [R, N]."""
    return DataFacts(dataset.name, int(dataset.num_classes), tuple(dataset.image_shape),
                     {'train': int(dataset.num_train), 'val': int(dataset.val_labels.size),
                      'test': int(dataset.test_labels.size)},
                     tuple(float(r) for r in noise_ratios), tuple(int(s) for s in seeds),
                     np.asarray(dataset.train_labels), np.asarray(labels), np.asarray(noise_mask, bool))
