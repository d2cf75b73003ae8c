"""Data: sources (tfds, raw files, synthetic), splits, label noise, on-device pipeline."""

from memjax.data.dataset import Dataset, load_dataset
from memjax.data.noise import NoisyLabels, noisy_labels, replica_labels

__all__ = ['Dataset', 'load_dataset', 'NoisyLabels', 'noisy_labels', 'replica_labels']
