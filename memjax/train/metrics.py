"""Per-replica accuracies on the subsets the papers report.

Given predictions on the run's image pool (train, then validation, then test),
for every replica:

- train_accuracy: all training examples vs the replica's own (noisy) labels
  (the stopping criterion);
- clean_accuracy: D_c^r, the examples whose labels were not redrawn;
- memorization_accuracy: D_n^r vs the noisy labels (chance is 1/K);
- noisy_true_accuracy: D_n^r vs the true labels;
- val_accuracy, test_accuracy: held-out splits vs true labels.

A subset that is empty (D_n^0) gives None.
"""

from __future__ import annotations

import numpy as np


def accuracy(predictions: np.ndarray, labels: np.ndarray, where: np.ndarray | None = None) -> float | None:
    """Fraction of predictions [n] equal to labels [n], over `where` (bool [n]) if given."""
    if where is not None:
        predictions, labels = predictions[where], labels[where]
    if predictions.size == 0:
        return None
    return float(np.mean(predictions == labels))


def subset_accuracies(train_predictions: np.ndarray, labels: np.ndarray, true_labels: np.ndarray,
                      noise_mask: np.ndarray) -> dict:
    """Accuracies of one replica on its training set.

    Args:
      train_predictions: int [N]; labels: int [N] the replica's labels;
      true_labels: int [N]; noise_mask: bool [N] (D_n^r).
    """
    return {
        'train_accuracy': accuracy(train_predictions, labels),
        'clean_accuracy': accuracy(train_predictions, true_labels, ~noise_mask),
        'memorization_accuracy': accuracy(train_predictions, labels, noise_mask),
        'noisy_true_accuracy': accuracy(train_predictions, true_labels, noise_mask),
    }


def epoch_metrics(predictions: np.ndarray, labels: np.ndarray, true_labels: np.ndarray,
                  noise_mask: np.ndarray, val_labels: np.ndarray, test_labels: np.ndarray) -> list[dict]:
    """Accuracies of every replica.

    Args:
      predictions: int [R, P] on the pool: N train, V validation, M test, then padding.
      labels: int [R, N]; true_labels: int [N]; noise_mask: bool [R, N];
      val_labels: int [V]; test_labels: int [M].

    Returns:
      One dict per replica.
    """
    n, v, m = true_labels.size, val_labels.size, test_labels.size
    rows = []
    for r in range(predictions.shape[0]):
        row = subset_accuracies(predictions[r, :n], labels[r], true_labels, noise_mask[r])
        row['val_accuracy'] = accuracy(predictions[r, n:n + v], val_labels)
        row['test_accuracy'] = accuracy(predictions[r, n + v:n + v + m], test_labels)
        rows.append(row)
    return rows
