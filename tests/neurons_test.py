"""The critical-neuron search finds a planted neuron; the AUC is a rank statistic."""

import jax
import jax.numpy as jnp
import numpy as np

from memjax.analysis.localization.neurons import (Settings, accuracy_after_removal, critical_neuron_search,
                                     detection_auc)
from memjax.models.layers import DenseReLU
from memjax.models.stages import StagedModel


def planted_model():
    """fc1: 4 ReLU units copying the 4 inputs; fc2: class 0 is driven by unit 2 alone."""
    model = StagedModel('planted', (('fc1', DenseReLU(4)), ('fc2', DenseReLU(2, relu=False))), 2)
    variables = model.init(jax.random.PRNGKey(0), (4,))
    fc2 = jnp.array([[0.0, 1.0], [0.0, 1.0], [5.0, 0.0], [0.0, 1.0]])
    variables['params'] = {'fc1': {'dense': {'kernel': jnp.eye(4), 'bias': jnp.zeros(4)}},
                           'fc2': {'dense': {'kernel': fc2, 'bias': jnp.zeros(2)}}}
    return model, variables


def test_search_removes_exactly_the_planted_neuron():
    model, variables = planted_model()
    x = jnp.array([[0.5, 0.5, 1.0, 0.5], [0.4, 0.6, 0.9, 0.3]])  # class 0 via unit 2 (5 * 1.0 > 1.5)
    y = jnp.array([0, 0])
    ref_x = jnp.array([[1.0, 1.0, 0.0, 1.0], [0.0, 1.0, 0.0, 1.0]])  # class 1 examples
    ref_y = jnp.array([1, 1])
    settings = Settings(max_neurons=3, noise_std=0.01, noise_copies=5, reference_batch=2, parallel=2)
    result = critical_neuron_search(model, variables, x, y, ref_x, ref_y, settings, jax.random.PRNGKey(0))
    assert result['initially_correct'].all() and result['flipped'].all()
    assert result['count'].tolist() == [1, 1]
    np.testing.assert_array_equal(result['masks']['fc1'], [[1, 1, 0, 1], [1, 1, 0, 1]])
    accuracy = accuracy_after_removal(model, variables, result['masks'], x, y)
    np.testing.assert_array_equal(accuracy, [0.0, 0.0])


def test_detection_auc():
    assert detection_auc(np.array([10, 12, 15]), np.array([2, 3])) == 1.0
    assert detection_auc(np.array([2, 3]), np.array([10, 12])) == 0.0
    assert detection_auc(np.array([5]), np.array([5])) == 0.5
