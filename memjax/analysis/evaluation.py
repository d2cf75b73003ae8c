"""The accuracies of a trained model's predictions, as the training metrics define them, for analyses."""

from __future__ import annotations

import numpy as np

from memjax.train.metrics import accuracy, subset_accuracies


def training_metrics(predictions: np.ndarray, labels: np.ndarray, true_labels: np.ndarray,
                     noise_mask: np.ndarray, test_predictions: np.ndarray | None = None,
                     test_labels: np.ndarray | None = None) -> dict:
    """clean / memorization / noisy_true accuracies (+ test) of one model, as in `memjax.train.metrics`."""
    row = subset_accuracies(predictions, labels, true_labels, noise_mask)
    if test_predictions is not None:
        row['test_accuracy'] = accuracy(test_predictions, test_labels)
    return row
