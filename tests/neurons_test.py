"""The critical-neuron search finds a planted neuron; the AUC is a rank statistic."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import pytest

from memjax.analysis.localization.neuron_candidates import full_masks, masked_variables, removal_scores
from memjax.analysis.localization.neuron_memory import memory_budget, program_bytes
from memjax.analysis.localization.neurons import (Settings, accuracy_after_removal, censored_auc, channel_scores,
                                                  critical_neuron_search, detection_auc, input_noise,
                                                  search_compiler)
from memjax.errors import ConfigError
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
        removed_weight = np.flatnonzero(both['masks']['fc2/dense/kernel'][j] == 0).tolist()
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


def _conv_bn_model():
    """conv1: a 3-channel ConvBN without ReLU, with BatchNorm statistics and affine parameters of its own."""
    model = StagedModel('one', (('conv1', ConvBN(3, relu=False)), ('fc', DenseReLU(2, relu=False))), 2)
    variables = model.init(jax.random.PRNGKey(0), (5, 5, 2))
    variables['batch_stats']['conv1']['bn'] = {'mean': jnp.array([0.1, -0.2, 0.3]), 'var': jnp.array([0.5, 2.0, 1.5])}
    variables['params']['conv1']['bn'] = {'scale': jnp.array([1.5, 0.7, 2.0]), 'bias': jnp.array([0.2, -0.4, 0.1])}
    return model, variables


def test_p3_code_removes_a_conv_channel_by_zeroing_its_kernel_and_the_batchnorm_output_is_a_constant():
    model, variables = _conv_bn_model()
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 5, 5, 2))
    masks = full_masks(model, variables['params'], 'p3_code')
    # P3's code: a conv kernel per output channel; every BatchNorm scale and bias element, every linear weight
    # and bias its own candidate
    assert {k: v.shape for k, v in masks.items()} == {
        'conv1/conv/kernel': (3,), 'conv1/bn/scale': (3,), 'conv1/bn/bias': (3,), 'fc/dense/kernel': (150,),
        'fc/dense/bias': (2,)}
    plain = np.asarray(model.apply(variables, x, capture=['conv1']).features['conv1'])
    stats, bn = variables['batch_stats']['conv1']['bn'], variables['params']['conv1']['bn']

    def conv1(**zeroed):
        m = dict(masks, **{k: jnp.asarray(v, jnp.float32) for k, v in zeroed.items()})
        v, activations = masked_variables(model, variables, m)
        assert activations == {}  # parameters are zeroed, no activation is masked
        return np.asarray(model.apply(v, x, capture=['conv1']).features['conv1'])

    out = conv1(**{'conv1/conv/kernel': [1, 0, 1]})
    constant = bn['bias'][1] - stats['mean'][1] * bn['scale'][1] / np.sqrt(stats['var'][1] + 1e-5)
    np.testing.assert_allclose(out[..., 1], np.full(out.shape[:-1], constant), rtol=1e-5)  # not 0
    np.testing.assert_allclose(out[..., [0, 2]], plain[..., [0, 2]], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(conv1(**{'conv1/bn/scale': [1, 0, 1]})[..., 1], np.full(out.shape[:-1], bn['bias'][1]),
                               rtol=1e-5)  # the scale alone: BatchNorm gives its bias
    np.testing.assert_allclose(conv1(**{'conv1/bn/bias': [1, 0, 1]})[..., 1], plain[..., 1] - bn['bias'][1],
                               rtol=1e-4, atol=1e-5)  # the bias alone
    # the default ('channels', P3's text) zeroes the channel's activation instead
    channels = full_masks(model, variables['params'], 'channels', classifier_weights=False)
    assert set(channels) == {'conv1'}
    zeroed = model.apply(variables, x, capture=['conv1'], masks={'conv1': jnp.array([1.0, 0.0, 1.0])})
    np.testing.assert_array_equal(np.asarray(zeroed.features['conv1'])[..., 1], 0.0)


def test_p3_code_scores_each_tensor_on_its_own():
    """P3's code: param x grad per candidate, a conv kernel summed over its output channel's slice, each BatchNorm
    scale / bias element separately (not merged into one channel score)."""
    model, variables = _conv_bn_model()
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 5, 5, 2))
    masks = full_masks(model, variables['params'], 'p3_code')

    def objective(params, m):
        v, activations = masked_variables(model, {**variables, 'params': params}, m)
        return model.apply(v, x, masks=activations).output[:, 0].sum()

    scores = removal_scores(model, variables, masks, objective, 'param_grad')
    grads = jax.grad(lambda p: objective(p, masks))(variables['params'])
    kernel, g = variables['params']['conv1']['conv']['kernel'], grads['conv1']['conv']['kernel']
    np.testing.assert_allclose(scores['conv1/conv/kernel'], -(kernel * g).sum((0, 1, 2)), rtol=1e-5)
    for name in ('scale', 'bias'):
        np.testing.assert_allclose(scores[f'conv1/bn/{name}'],
                                   -variables['params']['conv1']['bn'][name] * grads['conv1']['bn'][name], rtol=1e-5)
    fc = variables['params']['fc']['dense']['kernel']
    np.testing.assert_allclose(scores['fc/dense/kernel'], -(fc * grads['fc']['dense']['kernel']).ravel(), rtol=1e-5)


def test_p3_code_search_zeroes_a_single_weight_of_the_planted_path():
    model, variables = planted_model()
    x = jnp.array([[0.5, 0.5, 1.0, 0.5], [0.4, 0.6, 0.9, 0.3]])
    ref_x, ref_y = jnp.array([[1.0, 1.0, 0.0, 1.0], [0.0, 1.0, 0.0, 1.0]]), jnp.array([1, 1])
    settings = Settings(max_neurons=3, noise_copies=5, reference_batch=2, parallel=2, candidates='p3_code')
    result = critical_neuron_search(model, variables, x, jnp.array([0, 0]), ref_x, ref_y, settings,
                                    jax.random.PRNGKey(0))
    assert result['flipped'].all() and result['count'].tolist() == [1, 1]
    for j in range(2):
        zeroed = {k: np.flatnonzero(m[j] == 0).tolist() for k, m in result['masks'].items() if (m[j] == 0).any()}
        # fc1's weight from input 2 to unit 2, or fc2's weight from unit 2 to class 0
        assert zeroed in ({'fc1/dense/kernel': [2 * 4 + 2]}, {'fc2/dense/kernel': [2 * 2 + 0]}), zeroed


def _small_cnn():
    model = StagedModel('small', (('conv1', ConvBN(4)), ('conv2', ConvBN(4, pool=True)),
                                  ('fc', DenseReLU(3, relu=False))), 3, example_shape=(6, 6, 2))
    variables = model.init(jax.random.PRNGKey(3), (6, 6, 2))
    # running statistics away from their initial (0, 1): else zeroing a kernel channel and zeroing its
    # BatchNorm scale have exactly equal scores, and the search's choice between them is rounding
    for i, stage in enumerate(('conv1', 'conv2')):
        variables['batch_stats'][stage]['bn'] = {
            'mean': 0.3 * jax.random.normal(jax.random.PRNGKey(10 + i), (4,)),
            'var': jax.random.uniform(jax.random.PRNGKey(20 + i), (4,), minval=0.5, maxval=2.0)}
    x = jax.random.normal(jax.random.PRNGKey(4), (5, 6, 6, 2))
    y = jnp.argmax(model.apply(variables, x).output, -1)  # the model's own predictions: initially correct
    ref_x = jax.random.normal(jax.random.PRNGKey(5), (12, 6, 6, 2))
    ref_y = jax.random.randint(jax.random.PRNGKey(6), (12,), 0, 3)
    return model, variables, x, y, ref_x, ref_y


@pytest.mark.parametrize('candidates', ['channels', 'p3_code'])
def test_the_search_does_not_depend_on_how_many_examples_run_at_once(candidates):
    model, variables, x, y, ref_x, ref_y = _small_cnn()
    settings = Settings(max_neurons=4, noise_copies=2, reference_batch=4, candidates=candidates)
    results = {p: critical_neuron_search(model, variables, x, y, ref_x, ref_y,
                                         dataclasses.replace(settings, parallel=p), jax.random.PRNGKey(7))
               for p in (2, 4)}  # 5 examples: chunks of 2, 2, 1 and of 4, 1 (the last ones padded)
    assert results[2]['parallel'] == 2 and results[4]['parallel'] == 4
    assert results[2]['initially_correct'].sum() >= 3 and results[2]['count'].sum() > 3
    for name in ('count', 'flipped', 'initially_correct'):
        np.testing.assert_array_equal(results[2][name], results[4][name], err_msg=name)
    for key in results[2]['masks']:
        np.testing.assert_array_equal(results[2]['masks'][key], results[4]['masks'][key], err_msg=key)
    if candidates == 'channels':
        after = {p: accuracy_after_removal(model, variables, results[2]['masks'], ref_x, ref_y, p) for p in (2, 4)}
        np.testing.assert_allclose(after[2], after[4])
        assert len(set(after[2].round(6))) > 1  # the removals differ between examples, and so do the accuracies


def test_parallel_none_fits_the_memory_budget_and_an_explicit_value_that_cannot_fit_is_refused():
    model, variables = planted_model()
    x = jnp.array([[0.5, 0.5, 1.0, 0.5], [0.4, 0.6, 0.9, 0.3]] * 3)[:5]
    y = jnp.zeros(5, jnp.int32)
    ref_x, ref_y = jnp.array([[1.0, 1.0, 0.0, 1.0], [0.0, 1.0, 0.0, 1.0]]), jnp.array([1, 1])
    settings = Settings(max_neurons=2, noise_copies=2, reference_batch=64, classifier_weights=False)
    compile_at = search_compiler(model, variables, x, y, ref_x, ref_y, settings, jax.random.PRNGKey(7))
    two, four = program_bytes(compile_at(2)), program_bytes(compile_at(4))
    assert 0 < two < four  # more examples at once need more memory
    budget = (two + four) / 2 / 2 ** 30
    roomy = critical_neuron_search(model, variables, x, y, ref_x, ref_y, settings, jax.random.PRNGKey(7))
    tight = critical_neuron_search(model, variables, x, y, ref_x, ref_y,
                                   dataclasses.replace(settings, memory_budget_gb=budget), jax.random.PRNGKey(7))
    assert roomy['parallel'] == 5 and tight['parallel'] in (2, 3)  # all 5 examples at once only with room
    np.testing.assert_array_equal(roomy['count'], tight['count'])
    with pytest.raises(ConfigError, match=r'analysis.neurons.parallel=4: .* needs .* GB, more than'):
        critical_neuron_search(model, variables, x, y, ref_x, ref_y,
                               dataclasses.replace(settings, parallel=4, memory_budget_gb=budget),
                               jax.random.PRNGKey(7))
    assert memory_budget(2.0) == 2 * 2 ** 30 and memory_budget() > 2 ** 28  # on the CPU: part of the RAM
