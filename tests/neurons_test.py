"""The critical-neuron search finds a planted neuron; the AUC is a rank statistic."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import pytest

from memjax.analysis.localization.neurons import (Settings, accuracy_after_removal, censored_auc, channel_scores,
                                                  critical_neuron_search, detection_auc, input_noise)
from memjax.models.layers import ConvBN
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


@pytest.mark.parametrize('score,noise', [('param_grad', 'relative'), ('mask_grad', 'relative'),
                                         ('mask_grad', 'fixed')])
def test_search_removes_exactly_the_planted_neuron(score, noise):
    model, variables = planted_model()
    x = jnp.array([[0.5, 0.5, 1.0, 0.5], [0.4, 0.6, 0.9, 0.3]])  # class 0 via unit 2 (5 * 1.0 > 1.5)
    y = jnp.array([0, 0])
    ref_x = jnp.array([[1.0, 1.0, 0.0, 1.0], [0.0, 1.0, 0.0, 1.0]])  # class 1 examples
    ref_y = jnp.array([1, 1])
    settings = Settings(max_neurons=3, noise=noise, noise_std=0.01, noise_copies=5, reference_batch=2, parallel=2,
                        score=score, classifier_weights=False)
    result = critical_neuron_search(model, variables, x, y, ref_x, ref_y, settings, jax.random.PRNGKey(0))
    assert result['initially_correct'].all() and result['flipped'].all()
    assert result['count'].tolist() == [1, 1]
    np.testing.assert_array_equal(result['masks']['fc1'], [[1, 1, 0, 1], [1, 1, 0, 1]])
    accuracy = accuracy_after_removal(model, variables, result['masks'], x, y)
    np.testing.assert_array_equal(accuracy, [0.0, 0.0])
    # With the classifier's single weights as candidates (P3), one removal still flips each example: either
    # the planted unit or its one weight into class 0 (fc2's kernel entry [2, 0]).
    both = critical_neuron_search(model, variables, x, y, ref_x, ref_y,
                                  dataclasses.replace(settings, classifier_weights=True), jax.random.PRNGKey(0))
    assert both['count'].tolist() == [1, 1] and both['flipped'].all()
    for j in range(2):
        removed_unit = np.flatnonzero(both['masks']['fc1'][j] == 0).tolist()
        removed_weight = np.flatnonzero(both['masks']['fc2.weights'][j] == 0).tolist()
        assert (removed_unit, removed_weight) in (([2], []), ([], [2 * 2 + 0])), (removed_unit, removed_weight)


def test_detection_auc():
    assert detection_auc(np.array([10, 12, 15]), np.array([2, 3])) == 1.0
    assert detection_auc(np.array([2, 3]), np.array([10, 12])) == 0.0
    assert detection_auc(np.array([5]), np.array([5])) == 0.5


def test_censored_auc_makes_the_censoring_explicit():
    # noisy: 2 (observed), cap-censored; clean: 10 (observed), censored
    out = censored_auc([10, 5], [False, True], [2, 5], [False, True])
    # pairs (noisy, clean): (2,10) right, (2,C) right, (C,10) wrong, (C,C) undetermined
    assert out['auc_low'] == 0.5 and out['auc_high'] == 0.75 and out['auc'] == 0.625
    assert out['auc_determined'] == pytest.approx(2 / 3) and out['undetermined'] == 0.25
    plain = censored_auc([10, 12, 15], [False] * 3, [2, 3], [False] * 2)
    assert plain['auc'] == plain['auc_low'] == plain['auc_high'] == 1.0


def test_relative_noise_has_one_percent_of_each_inputs_norm():
    x = jnp.stack([jnp.ones((4, 4, 1)), 3 * jnp.ones((4, 4, 1))])
    noise = input_noise(jax.random.PRNGKey(0), x, 5, 'relative', 0.01, 0.0)
    norms = np.sqrt(np.sum(np.asarray(noise) ** 2, axis=(2, 3, 4)))
    np.testing.assert_allclose(norms, np.broadcast_to([0.04, 0.12], (5, 2)), rtol=1e-5)


def test_channel_score_is_the_first_order_change_of_zeroing_the_channel():
    stage = ConvBN(3)
    model = StagedModel('one', (('conv1', stage), ('fc', DenseReLU(2, relu=False))), 2)
    variables = model.init(jax.random.PRNGKey(0), (5, 5, 2))
    variables['batch_stats']['conv1']['mean'] = jnp.array([0.1, -0.2, 0.3])
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 5, 5, 2))
    # zeroing the channel's parameters (kernel slice, BatchNorm scale and bias) == masking its output
    params = jax.tree_util.tree_map(lambda p: p.at[..., 1].set(0.0) if p.shape[-1] == 3 else p,
                                    variables['params'])
    zeroed = model.apply({**variables, 'params': params}, x).output
    masked = model.apply(variables, x, masks={'conv1': jnp.array([1.0, 0.0, 1.0])}).output
    np.testing.assert_allclose(zeroed, masked, rtol=1e-5, atol=1e-6)
    grads = jax.grad(lambda p: model.apply({**variables, 'params': p}, x).output.sum())(variables['params'])
    scores = channel_scores(variables['params']['conv1'], grads['conv1'], 3)
    kernel, g = variables['params']['conv1']['conv']['kernel'], grads['conv1']['conv']['kernel']
    bn, gbn = variables['params']['conv1']['bn'], grads['conv1']['bn']
    expect = (kernel * g).sum((0, 1, 2)) + bn['scale'] * gbn['scale'] + bn['bias'] * gbn['bias']
    np.testing.assert_allclose(scores, expect, rtol=1e-5)


class _DenseResidual(nn.Module):
    """x + b(a(x)) with two layers inside the branch (`block.a`, `block.b`): [B, 4] -> [B, 4]."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        y = DenseReLU(4, name='a')(x, train)
        return x + DenseReLU(4, relu=False, name='b')(y, train)


def test_a_planted_neuron_inside_a_residual_branch_is_found_and_the_skip_path_stays():
    model = StagedModel('res', (('block', _DenseResidual()), ('fc', DenseReLU(2, relu=False))), 2, example_shape=(4,))
    assert model.layer_names == ('block.a', 'block.b', 'fc')
    variables = model.init(jax.random.PRNGKey(0), (4,))
    b = jnp.zeros((4, 4)).at[2, 2].set(5.0)  # the branch adds 5 x input 2 to channel 2 only
    fc = jnp.array([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    variables['params'] = {'block': {'a': {'dense': {'kernel': jnp.eye(4), 'bias': jnp.zeros(4)}},
                                     'b': {'dense': {'kernel': b, 'bias': jnp.zeros(4)}}},
                           'fc': {'dense': {'kernel': fc, 'bias': jnp.zeros(2)}}}
    x = jnp.array([[0.5, 0.5, 1.0, 0.5], [0.4, 0.6, 0.9, 0.3]])  # class 0 only through the branch: 6 > 1.5
    y = jnp.array([0, 0])
    ref_x, ref_y = jnp.array([[1.0, 1.0, 0.0, 1.0]]), jnp.array([1])
    settings = Settings(max_neurons=3, noise_copies=5, reference_batch=1, parallel=2, classifier_weights=False)
    result = critical_neuron_search(model, variables, x, y, ref_x, ref_y, settings, jax.random.PRNGKey(0))
    assert result['flipped'].all() and result['count'].tolist() == [1, 1]
    removed = {name: np.flatnonzero(np.asarray(m[0]) == 0).tolist() for name, m in result['masks'].items()}
    assert removed in ({'block.a': [2], 'block.b': []}, {'block.a': [], 'block.b': [2]}), removed
    masks = {name: jnp.asarray(m[0]) for name, m in result['masks'].items()}
    out = model.apply(variables, x, capture=['block'], masks=masks).features['block']
    np.testing.assert_allclose(out, x, atol=1e-6)  # the branch is silenced, the skip path carries x unchanged
