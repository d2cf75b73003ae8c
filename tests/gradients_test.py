"""Gradient accounting: the split is exact, and it runs in training and from checkpoints."""

import os

import jax
import jax.numpy as jnp
import numpy as np

from helpers import tiny_config
from memjax.analysis.runner import run_analyses
from memjax.models import build_model
from memjax.run import open_run
from memjax.train.gradient_split import split_gradients, tensor_sums, unit_statistics
from memjax.train.loop import train
from memjax.train.trainable import cross_entropy
from train_test import assert_trees, final_variables

quiet = lambda _: None


def test_the_batch_gradient_is_the_sum_of_its_clean_and_noisy_parts_computed_separately():
    model = build_model('cnn', 4, width=4)
    variables = model.init(jax.random.PRNGKey(0), (8, 8, 1))
    x = jax.random.normal(jax.random.PRNGKey(1), (16, 8, 8, 1))
    y = jnp.arange(16) % 4
    noisy = jnp.arange(16) % 5 == 0
    g_clean, g_noisy, _, _ = jax.jit(lambda v: split_gradients(model, v, x, y, noisy, 1.0 / 16))(variables)

    def part_loss(params, which):
        run = model.apply({**variables, 'params': params}, x, train=True)
        losses = jax.vmap(lambda l, t: cross_entropy(l[None], t[None]))(run.output, y)
        return jnp.sum(jnp.where(which, losses, 0.0)) / 16

    part_grad = jax.jit(jax.grad(part_loss))
    expect_clean = part_grad(variables['params'], ~noisy)
    expect_noisy = part_grad(variables['params'], noisy)
    full = jax.jit(jax.grad(lambda p: cross_entropy(model.apply({**variables, 'params': p}, x, train=True).output,
                                                    y)))(variables['params'])
    close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    jax.tree_util.tree_map(close, g_clean, expect_clean)
    jax.tree_util.tree_map(close, g_noisy, expect_noisy)
    jax.tree_util.tree_map(close, jax.tree_util.tree_map(jnp.add, g_clean, g_noisy), full)
    stats = unit_statistics(tensor_sums(model, g_clean, g_noisy), model.units('stage'))
    assert set(stats) == set(model.stage_names)
    assert all(-1 <= float(v['cosine']) <= 1 for v in stats.values())


def test_accounting_during_training_records_every_epoch_and_leaves_training_unchanged(tmp_path):
    on = tiny_config(**{'train.gradient_accounting': True, 'noise.ratios': (0.5,)})
    off = tiny_config(**{'noise.ratios': (0.5,)})
    train(on, str(tmp_path / 'on'), log=quiet)
    train(off, str(tmp_path / 'off'), log=quiet)
    assert_trees(final_variables(str(tmp_path / 'on')), final_variables(str(tmp_path / 'off')), exact=False,
                 rtol=1e-4, atol=1e-5)
    rows = open_run(str(tmp_path / 'on')).directory.read_metrics('gradients.jsonl')
    assert len(rows) == 3 * (3 * 3 + 4 * 2)  # epochs x CNN tensors (conv kernel, BN scale, bias; dense kernel, bias)
    assert all(r['clean_sq'] > 0 and r['noisy_sq'] > 0 for r in rows)
    config = tiny_config(**{'analyses': ('gradients',)})
    run_analyses(config, str(tmp_path / 'on'), log=quiet)
    assert os.path.exists(tmp_path / 'on' / 'results' / 'gradients' / 'gradients_training.csv')
    assert os.path.getsize(tmp_path / 'on' / 'figures' / 'gradients_r0.5.png') > 10_000
    config.analysis.gradients.source = 'checkpoints'
    config.analysis.gradients.batch_size = 16
    run_analyses(config, str(tmp_path / 'on'), log=quiet)
    lines = open(tmp_path / 'on' / 'results' / 'gradients' / 'gradients_checkpoints.csv').read().splitlines()
    assert len(lines) == 1 + 4 * 7  # kept epochs 0..3 x stages
