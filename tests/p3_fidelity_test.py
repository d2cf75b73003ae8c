"""P3 as its code defines it: example-tied evaluation by hand, mask fractions, retraining, gradient accounting."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import tiny_config
from memjax.analysis.localization.dropout_masks import evaluation_mask, memorization_mask
from memjax.analysis.runner import run_analyses
from memjax.analysis.localization import retraining as retraining_lib
from memjax.analysis.stage_training import train_unit
from memjax.engine.runner import runner_for
from memjax.models import build_model
from memjax.models.layers import DenseReLU
from memjax.models.stages import StagedModel
from memjax.models.units import Unit
from memjax.run import open_run
from memjax.train.gradient_split import split_gradients, tensor_sums, unit_statistics
from memjax.train.faults import Poison
from memjax.train.loop import train
from memjax.train.state import OptimizerSpec

quiet = lambda _: None


def mlp(hidden=10, classes=3, inputs=4, seed=0):
    model = StagedModel('mlp', (('fc1', DenseReLU(hidden)), ('fc2', DenseReLU(classes, relu=False))), classes)
    return model, model.init(jax.random.PRNGKey(seed), (inputs,))


@pytest.mark.parametrize('how', ['expected', 'drop'])
def test_example_tied_evaluation_equals_a_hand_computation(how):
    model, variables = mlp()
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(1), (5, 4)))
    variant = jnp.array([0, 0.4, 0.3, 0.0])
    masks = {'fc1': jax.vmap(lambda i: evaluation_mask(variant, jax.random.PRNGKey(2), 0, i, (10,), how))(
        jnp.arange(5))}
    logits = np.asarray(model.apply(variables, jnp.asarray(x), masks=masks).output)
    p = jax.tree_util.tree_map(np.asarray, variables['params'])
    h = np.maximum(x @ p['fc1']['dense']['kernel'] + p['fc1']['dense']['bias'], 0)
    gate = {'expected': np.array([1.0] * 4 + [0.3] * 6),  # memorization channels x p_mem
            'drop': np.array([0.7 / 0.4] * 4 + [0.0] * 6)}[how]  # dropped; generalization x (p_gen + p_mem) / p_gen
    expect = (h * gate) @ p['fc2']['dense']['kernel'] + p['fc2']['dense']['bias']
    np.testing.assert_allclose(logits, expect, rtol=1e-5, atol=1e-6)


def test_memorization_channels_are_bernoulli_p_mem_over_the_non_generalization_channels():
    key = jax.random.PRNGKey(0)
    masks = np.asarray(jax.vmap(lambda i: memorization_mask(key, 2, i, 100, 0.4, 0.2))(jnp.arange(4000)))
    assert masks[:, :40].sum() == 0  # never a generalization channel
    assert abs(masks[:, 40:].mean() - 0.2) < 0.005
    assert np.all(np.abs(masks[:, 40:].mean(0) - 0.2) < 0.04)  # every channel, not a few
    counts = masks.sum(1)
    assert counts.std() > 1.0  # a Bernoulli draw, not a fixed count (binomial(60, 0.2): std 3.1)
    again = np.asarray(jax.vmap(lambda i: memorization_mask(key, 2, i, 100, 0.4, 0.2))(jnp.arange(4000)))
    np.testing.assert_array_equal(masks, again)  # derived from the index, reproducible
    exact = np.asarray(jax.vmap(lambda i: memorization_mask(key, 2, i, 100, 0.4, 0.2, 'exact'))(jnp.arange(500)))
    assert np.all(exact.sum(1) == 12) and exact[:, :40].sum() == 0


@pytest.fixture(scope='module')
def noisy_run(tmp_path_factory):
    path = str(tmp_path_factory.mktemp('p3f') / 'run')
    train(tiny_config(**{'noise.ratios': (0.5,), 'noise.mode': 'incorrect'}), path, log=quiet)
    return path


def _equal(a, b):
    return all(jax.tree_util.tree_leaves(jax.tree_util.tree_map(lambda x, y: bool(np.array_equal(x, y)), a, b)))


@pytest.mark.parametrize('batchnorm,stage', [('live', 'fc2'), ('frozen', 'fc2'), ('frozen', 'conv2'),
                                             ('live', 'conv2')])
def test_retraining_resets_the_stage_sees_clean_examples_only_and_freezes_the_rest(noisy_run, monkeypatch,
                                                                                   batchnorm, stage):
    run = open_run(noisy_run)
    model = run.model
    final, initial = run.checkpoints.load_epoch(run.final_epoch()), run.checkpoints.load_epoch(0)
    one = lambda tree: jax.tree_util.tree_map(lambda x: np.asarray(x[0]), tree)
    final, initial = one(final), one(initial)
    noisy = run.noise['noise_mask'][0]
    seen = {'start': None, 'indices': [], 'end': None}
    original = retraining_lib.train_unit

    def spy(runner, variables, *args, indices, **kwargs):
        seen['start'] = one(variables)
        seen['indices'] += [np.asarray(ix) for ix in indices]
        out = original(runner, variables, *args, indices=indices, **kwargs)
        seen['end'] = one(out)
        return out

    monkeypatch.setattr(retraining_lib, 'train_unit', spy)
    config = tiny_config(**{'analyses': ('retraining',), 'noise.ratios': (0.5,)})
    config.analysis.retraining.update(epochs=2, peak_epoch=1.0, batch_size=8, units=(stage,), batchnorm=batchnorm)
    run_analyses(config, noisy_run, log=quiet)

    start, end = seen['start'], seen['end']
    assert _equal(model.stage_variables(start, stage), model.stage_variables(initial, stage))  # reset to epoch 0
    assert seen['indices'] and all(not noisy[ix].any() for ix in seen['indices'])  # clean examples only
    assert not _equal(end['params'][stage], initial['params'][stage])  # it trained
    with_bn = set(final['batch_stats'])
    for other in model.stage_names:
        if other == stage:
            continue
        assert _equal(end['params'][other], final['params'][other])  # bit-identical
        if other in with_bn:
            stats_same = _equal(end['batch_stats'][other], final['batch_stats'][other])
            assert stats_same == (batchnorm == 'frozen'), other  # live: every BatchNorm updates
    if stage in with_bn:
        assert not _equal(end['batch_stats'][stage], initial['batch_stats'][stage])


def test_gradient_accounting_matches_numpy_on_a_tiny_model():
    model, variables = mlp(hidden=6, classes=3, inputs=5, seed=3)
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(4), (12, 5)), np.float64)
    y = np.arange(12) % 3
    noisy = np.arange(12) % 4 == 0
    g_c, g_n, _, _ = split_gradients(model, variables, jnp.asarray(x, jnp.float32), jnp.asarray(y),
                                     jnp.asarray(noisy), 1.0 / 12)
    sums = tensor_sums(model, g_c, g_n)
    stats = unit_statistics(sums, model.units('layer'), 'concat')
    p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), variables['params'])
    pre = x @ p['fc1']['dense']['kernel'] + p['fc1']['dense']['bias']
    h = np.maximum(pre, 0)
    logits = h @ p['fc2']['dense']['kernel'] + p['fc2']['dense']['bias']
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)

    def tensors(part):
        d = (probs - np.eye(3)[y]) * (part / 12.0)[:, None]
        dh = d @ p['fc2']['dense']['kernel'].T * (pre > 0)
        return {'fc1': [(x.T @ dh).ravel(), dh.sum(0)], 'fc2': [(h.T @ d).ravel(), d.sum(0)]}

    def grads(part):
        return {layer: np.concatenate(parts) for layer, parts in tensors(part).items()}

    clean, noise = grads((~noisy).astype(float)), grads(noisy.astype(float))
    for stage in ('fc1', 'fc2'):
        c, n = clean[stage], noise[stage]
        root = np.sqrt(c.size)
        assert stats[stage]['clean_norm'] == pytest.approx(np.linalg.norm(c) / root, rel=1e-4)
        assert stats[stage]['noisy_norm'] == pytest.approx(np.linalg.norm(n) / root, rel=1e-4)
        assert stats[stage]['total_norm'] == pytest.approx(np.linalg.norm(c + n) / root, rel=1e-4)
        assert stats[stage]['cosine'] == pytest.approx(c @ n / np.linalg.norm(c) / np.linalg.norm(n), abs=1e-4)
    # P3's aggregate: each tensor (kernel, bias) normalised on its own, then averaged over the unit's tensors.
    mean = unit_statistics(sums, model.units('layer'))
    for stage in ('fc1', 'fc2'):
        pairs = list(zip(tensors((~noisy).astype(float))[stage], tensors(noisy.astype(float))[stage]))
        expect_clean = np.mean([np.linalg.norm(c) / np.sqrt(c.size) for c, _ in pairs])
        expect_cos = np.mean([c @ n / np.linalg.norm(c) / np.linalg.norm(n) for c, n in pairs])
        assert mean[stage]['clean_norm'] == pytest.approx(expect_clean, rel=1e-4)
        assert mean[stage]['cosine'] == pytest.approx(expect_cos, abs=1e-4)
        assert mean[stage]['clean_norm'] != pytest.approx(stats[stage]['clean_norm'], rel=1e-3)
    # A unit of two layers (a P3 group such as layer1) is the concatenation of its layers' gradients.
    group = Unit('both', (('fc1',), ('fc2',)), ('fc1', 'fc2'), 'fc2')
    both = unit_statistics(sums, [group], 'concat')['both']
    c, n = np.concatenate([clean['fc1'], clean['fc2']]), np.concatenate([noise['fc1'], noise['fc2']])
    assert both['clean_norm'] == pytest.approx(np.linalg.norm(c) / np.sqrt(c.size), rel=1e-4)
    assert both['total_norm'] == pytest.approx(np.linalg.norm(c + n) / np.sqrt(c.size), rel=1e-4)
    assert both['cosine'] == pytest.approx(c @ n / np.linalg.norm(c) / np.linalg.norm(n), abs=1e-4)


def test_a_replica_that_stopped_writes_no_gradient_rows(tmp_path):
    path = str(tmp_path / 'run')  # replica 1 diverges after epoch 1 and stops; replica 0 goes on
    train(tiny_config(**{'train.gradient_accounting': True}), path, log=quiet, faults=[Poison(1, 1)])
    rows = open_run(path).directory.read_metrics('gradients.jsonl')
    epochs = {r: sorted({row['epoch'] for row in rows if row['replica'] == r}) for r in (0, 1)}
    assert epochs == {0: [1, 2, 3], 1: [1]}
    assert all(set(row) >= {'layer', 'tensor', 'clean_sq', 'noisy_sq', 'dot', 'count'} for row in rows)


@pytest.mark.parametrize('batchnorm', ['live', 'frozen'])
def test_retraining_one_conv_inside_a_residual_block_leaves_its_neighbour_bit_identical(batchnorm):
    model = build_model('resnet9', 3, width=4)
    unit = {u.name: u for u in model.units('p3_groups')}['layer3.conv_bn1']
    variables = model.init(jax.random.PRNGKey(0), (16, 16, 3))
    stacked = jax.tree_util.tree_map(lambda x: x[None], variables)
    start = stacked
    pool = jnp.asarray(np.random.default_rng(0).integers(0, 255, (32, 16, 16, 3)), jnp.uint8)
    labels = jnp.asarray(np.random.default_rng(1).integers(0, 3, (1, 32)), jnp.int32)
    end = train_unit(runner_for(model, np.zeros(3), np.ones(3)), stacked, unit, OptimizerSpec('sgd', 0.1, momentum=0.0),
                     batch_size=8, pool=pool, labels=labels, indices=[np.arange(32)], epochs=1, seed=0, lifting='loop',
                     batchnorm=batchnorm)
    layer3 = lambda tree, name: tree['layer3'][name]
    assert not _equal(layer3(end['params'], 'conv_bn1'), layer3(start['params'], 'conv_bn1'))
    assert _equal(layer3(end['params'], 'conv_bn2'), layer3(start['params'], 'conv_bn2'))
    for stage in model.stage_names:
        if stage != 'layer3':
            assert _equal(end['params'][stage], start['params'][stage]), stage
    assert not _equal(layer3(end['batch_stats'], 'conv_bn1'), layer3(start['batch_stats'], 'conv_bn1'))
    others_same = _equal(layer3(end['batch_stats'], 'conv_bn2'), layer3(start['batch_stats'], 'conv_bn2'))
    assert others_same == (batchnorm == 'frozen')


def test_the_gradient_window_averages_exactly_its_epochs():
    """P3 Fig. 1 averages epochs 15-20 (its plotter's entries [15:20]: the 16th-20th epochs), not all 50."""
    from memjax.analysis.localization.gradients import Settings, window_rows
    from memjax.errors import ConfigError
    rows = [{'epoch': e, 'source': 'training', 'replica': r, 'noise_ratio': 0.1, 'seed': r, 'granularity': 'layer',
             'aggregate': 'tensor_mean', 'unit': u, 'clean_norm': float(e), 'noisy_norm': 10.0 * e + r,
             'total_norm': 1.0, 'cosine': -0.5} for e in range(1, 31) for r in (0, 1) for u in ('conv1', 'fc')]
    window = window_rows(rows, (16, 20))
    assert len(window) == 4  # replicas x units
    for row in window:
        assert row['clean_norm'] == pytest.approx(18.0) and row['noisy_norm'] == pytest.approx(180.0 + row['replica'])
        assert row['window'] == 'epochs 16-20' and row['epochs'] == '16-20 (5)'
    everything = window_rows(rows, ())
    assert everything[0]['clean_norm'] == pytest.approx(15.5) and everything[0]['window'] == 'all epochs'
    for bad in ((20, 16), (16,), (1.5, 3)):
        with pytest.raises(ConfigError, match='analysis.gradients.window'):
            Settings(window=bad).validate()
