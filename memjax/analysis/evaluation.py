"""Evaluating many models (replicas, rewound or modified variants) on fixed image sets: one batched predict."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from memjax.analysis.lifting import Lifted
from memjax.data.pipeline import normalize
from memjax.models import StagedModel
from memjax.train.metrics import accuracy, subset_accuracies


class Evaluator:
    """Predictions of K models given as stacked variables [K, ...] (lifted over K)."""

    def __init__(self, model: StagedModel, mean, std, strategy: str, size: int, batch: int = 1000):
        self.model, self.batch = model, batch
        self.mean, self.std = jnp.asarray(mean), jnp.asarray(std)
        self.lift = Lifted(strategy, size)

    def _predict(self, variables, images, masks):
        x = normalize(images, self.mean, self.std, self.model.dtype)
        logits = self.model.apply(variables, x, masks=masks).output
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)

    def _predict_unmasked(self, variables, images):
        return self._predict(variables, images, None)

    def predict(self, stacked_variables, images: jax.Array, masks: dict | None = None) -> np.ndarray:
        """int32 [K, P] on images uint8 [P, ...]; `masks` (optional): per-model stage masks stacked [K, ...]."""
        if masks:
            return self.lift.batched_over(self._predict, (True, True), images, stacked_variables, masks,
                                          batch=self.batch)
        return self.lift.batched_over(self._predict_unmasked, (True,), images, stacked_variables, batch=self.batch)


def training_metrics(predictions: np.ndarray, labels: np.ndarray, true_labels: np.ndarray,
                     noise_mask: np.ndarray, test_predictions: np.ndarray | None = None,
                     test_labels: np.ndarray | None = None) -> dict:
    """clean / memorization / noisy_true accuracies (+ test) of one model, as in `memjax.train.metrics`."""
    row = subset_accuracies(predictions, labels, true_labels, noise_mask)
    if test_predictions is not None:
        row['test_accuracy'] = accuracy(test_predictions, test_labels)
    return row
