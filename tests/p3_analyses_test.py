"""P3 analyses on a tiny run: rewinding identities, retraining, neurons, example-tied dropout."""

import csv
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import tiny_config
from memjax.analysis.localization.dropout_masks import evaluation_mask, memorization_mask, training_mask
from memjax.analysis.localization.rewinding import rewound
from memjax.analysis.runner import run_analyses
from memjax.run import open_run
from memjax.train.loop import train

quiet = lambda _: None


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp('p3') / 'run')
    train(tiny_config(**{'noise.ratios': (0.0, 0.5), 'noise.mode': 'incorrect'}), path, log=quiet)
    return path


def read(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_rewinding_identities(workdir):
    run = open_run(workdir)
    model = run.model
    final = run.checkpoints.load_epoch(run.final_epoch())
    initial = run.checkpoints.load_epoch(0)
    for stage in model.stage_names:
        same = rewound(model, final, final, [stage])
        jax.tree_util.tree_map(np.testing.assert_array_equal, same, final)
        back = rewound(model, final, initial, [stage])
        jax.tree_util.tree_map(np.testing.assert_array_equal, model.stage_variables(back, stage),
                               model.stage_variables(initial, stage))
        for other in model.stage_names:
            if other != stage:
                jax.tree_util.tree_map(np.testing.assert_array_equal, model.stage_variables(back, other),
                                       model.stage_variables(final, other))
    config = tiny_config(**{'analyses': ('rewinding',)})
    run_analyses(config, workdir, log=quiet)
    rows = read(os.path.join(workdir, 'results/rewinding/rewinding.csv'))
    untouched = {r['replica']: r for r in rows if r['mode'] == 'none'}
    for r in rows:
        if r['mode'] == 'single' and int(r['epoch']) == run.final_epoch():
            assert r['clean_accuracy'] == untouched[r['replica']]['clean_accuracy']
            assert r['test_accuracy'] == untouched[r['replica']]['test_accuracy']
    recorded = {row['replica']: row for row in run.directory.read_metrics() if row['epoch'] == run.final_epoch()}
    for replica, r in untouched.items():
        assert float(r['test_accuracy']) == pytest.approx(recorded[int(replica)]['test_accuracy'])
    assert len([r for r in rows if r['mode'] == 'last_k']) == 2 * 4 * 6  # replicas x epochs x k


def test_retraining_and_neurons_run_from_the_config(workdir):
    config = tiny_config(**{'analyses': ('retraining', 'neurons')})
    config.analysis.retraining.epochs = 2
    config.analysis.retraining.peak_epoch = 1.0
    config.analysis.retraining.batch_size = 8
    config.analysis.retraining.stages = ('conv1', 'fc4')
    config.analysis.neurons.num_clean = 4
    config.analysis.neurons.num_noisy = 4
    config.analysis.neurons.max_neurons = 5
    config.analysis.neurons.reference_batch = 8
    config.analysis.neurons.accuracy_examples = 16
    run_analyses(config, workdir, log=quiet)
    rows = read(os.path.join(workdir, 'results/retraining/retraining.csv'))
    assert len(rows) == 2 * 3  # stages x (epoch 0 .. 2), one noisy replica
    assert {r['stage'] for r in rows} == {'conv1', 'fc4'}
    summary = read(os.path.join(workdir, 'results/neurons/summary.csv'))
    assert len(summary) == 1 and summary[0]['noise_ratio'] == '0.5'
    for name in ('retraining', 'neurons'):
        assert os.path.getsize(os.path.join(workdir, 'figures', f'{name}.png')) > 10_000


def test_example_tied_masks_are_deterministic_per_example_with_the_configured_fractions():
    key = jax.random.PRNGKey(3)
    channels = 50
    variant = jnp.array([0, 0.4, 0.2, 0.0])
    a = training_mask(variant, key, 1, 17, jax.random.PRNGKey(9), channels)
    b = training_mask(variant, key, 1, 17, jax.random.PRNGKey(123), channels)  # another step: same mask
    np.testing.assert_array_equal(a, b)
    assert float(a.sum()) == 0.4 * channels + 0.2 * channels
    assert np.all(np.asarray(a[:20]) == 1)  # generalization channels always on
    own = [np.flatnonzero(memorization_mask(key, 1, i, channels, 0.4, 0.2)) for i in range(30)]
    assert all(len(o) == 10 and o.min() >= 20 for o in own)
    assert len({tuple(o) for o in own}) > 25  # examples own different channels
    gen = evaluation_mask(variant, key, 1, 17, channels, 'generalization')
    assert float(gen.sum()) == 20
    trained = evaluation_mask(variant, key, 1, 17, channels, 'as_trained')
    np.testing.assert_array_equal(trained, a)
    held_out = evaluation_mask(variant, key, 1, -1, channels, 'as_trained')
    np.testing.assert_array_equal(held_out, gen)
    standard = training_mask(jnp.array([1, 0.0, 0.0, 0.5]), key, 1, 17, jax.random.PRNGKey(0), 1000)
    assert 0.4 < float(jnp.mean(standard > 0)) < 0.6 and float(standard.max()) == pytest.approx(2.0)


def test_example_tied_analysis_writes_its_table(workdir):
    config = tiny_config(**{'analyses': ('example_tied',)})
    config.analysis.example_tied.epochs = 2
    config.analysis.example_tied.grid_p_gen = (0.5,)
    config.analysis.example_tied.grid_p_mem = (0.25,)
    run_analyses(config, workdir, log=quiet)
    rows = read(os.path.join(workdir, 'results/example_tied/example_tied.csv'))
    assert [r['variant'] for r in rows] == ['example_tied', 'standard', 'sparse', 'example_tied']
    assert 'before->after' in open(os.path.join(workdir, 'results/example_tied/table.txt')).read()
    for r in rows:
        if r['variant'] in ('standard', 'sparse'):  # no memorization channels to drop
            assert r['clean_all'] == r['clean_generalization'] and r['noisy_all'] == r['noisy_generalization']
