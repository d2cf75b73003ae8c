"""P3 analyses on a tiny run: rewinding identities, retraining, neurons, example-tied dropout."""

import csv
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import tiny_config
from memjax.analysis.localization.dropout_masks import MODES, evaluation_mask, memorization_mask, training_mask
from memjax.analysis.localization.layer_groups import chosen_units
from memjax.analysis.localization.example_tied import Settings, summary_text
from memjax.analysis.localization.rewinding import rewound
from memjax.analysis.runner import run_analyses
from memjax.errors import ConfigError
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
    for unit in model.units('stage'):
        stage = unit.name
        same = rewound(model, final, final, [unit])
        jax.tree_util.tree_map(np.testing.assert_array_equal, same, final)
        back = rewound(model, final, initial, [unit])
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


def _with_unit_from(variables, source, unit):
    """`variables` with every params / batch_stats leaf under one of the unit's paths taken from `source`."""
    def pick(path, leaf, other):
        keys = tuple(getattr(k, 'key', k) for k in path)
        inside = any(keys[1:1 + len(p)] == tuple(p) for p in unit.paths) and keys[0] in ('params', 'batch_stats')
        return other if inside else leaf
    return jax.tree_util.tree_map_with_path(pick, variables, source)


def _accuracies(run, variables, replica):
    """clean / memorization / test accuracy of one model, from its predictions here."""
    data, noise = run.dataset, run.noise
    train = np.asarray(run.runner.predict(variables, data.train_images))
    test = np.asarray(run.runner.predict(variables, data.test_images))
    mask, labels = noise['noise_mask'][replica], noise['labels'][replica]
    return {'clean_accuracy': np.mean(train[~mask] == labels[~mask]),
            'memorization_accuracy': np.mean(train[mask] == labels[mask]),
            'test_accuracy': np.mean(test == data.test_labels)}


def test_retraining_and_neurons_run_from_the_config(workdir):
    """Retraining's epoch-0 rows are the final model of the noisy replica with the unit (params and BatchNorm
    statistics) rewound to its epoch-0 checkpoint (P3 section 5.2), recomputed here; neurons' summary is the
    summary of its per-example rows, and every row obeys the search's stopping rule.

    Would fail on: a unit not reset (the final model), reset to a fresh initialisation or to another replica's
    epoch 0, BatchNorm statistics left final, another unit reset, or accuracies against the wrong labels (true
    instead of noisy for memorization); for neurons, a search that stops before the cap without a flip, counts
    a neuron twice, or a summary that mixes clean and noisy examples or averages censored counts as flips.
    """
    config = tiny_config(**{'analyses': ('retraining', 'neurons')})
    config.analysis.retraining.epochs = 2
    config.analysis.retraining.peak_epoch = 1.0
    config.analysis.retraining.batch_size = 8
    config.analysis.retraining.units = ('conv1', 'fc4')
    config.analysis.neurons.num_clean = 4
    config.analysis.neurons.num_noisy = 4
    config.analysis.neurons.max_neurons = 5
    config.analysis.neurons.reference_batch = 8
    config.analysis.neurons.accuracy_examples = 16
    run_analyses(config, workdir, log=quiet)
    rows = read(os.path.join(workdir, 'results/retraining/retraining.csv'))
    assert len(rows) == 2 * 3  # stages x (epoch 0 .. 2), one noisy replica
    assert {r['unit'] for r in rows} == {'conv1', 'fc4'} and {r['granularity'] for r in rows} == {'p3_groups'}

    run = open_run(workdir)
    noisy = run.replica_index(0.5, 0)
    final, initial = run.replica_variables(run.final_epoch(), noisy), run.replica_variables(0, noisy)
    untouched = _accuracies(run, final, noisy)
    units = {u.name: u for u in chosen_units(run.model, 'p3_groups', ('conv1', 'fc4'))}
    differs = False
    for name, unit in units.items():
        (row,) = [r for r in rows if r['unit'] == name and r['epoch'] == '0']
        assert int(row['replica']) == noisy
        expected = _accuracies(run, _with_unit_from(final, initial, unit), noisy)
        for key, value in expected.items():
            assert float(row[key]) == pytest.approx(value, abs=1e-6), (name, key)
        differs |= any(abs(expected[k] - untouched[k]) > 1e-6 for k in expected)
    assert differs  # rewinding a unit changes the model: the comparison above is not vacuous

    neurons = read(os.path.join(workdir, 'results/neurons/neurons.csv'))
    summary = read(os.path.join(workdir, 'results/neurons/summary.csv'))
    assert len(summary) == 1 and summary[0]['noise_ratio'] == '0.5'
    removed = [k for k in neurons[0] if k.startswith('removed_')]
    assert neurons and removed
    mask = run.noise['noise_mask'][noisy]
    for r in neurons:
        count = int(r['neurons'])
        assert mask[int(r['example'])] == (r['kind'] == 'noisy')  # the kind is the example's
        assert r['censored'] == str(r['flipped'] == 'False')
        assert (1 <= count <= 5) if r['flipped'] == 'True' else count == 5  # no stop without a flip before the cap
        assert sum(int(r[k]) for k in removed) == count  # each removed neuron sits in exactly one unit
    for kind in ('clean', 'noisy'):
        mine = [r for r in neurons if r['kind'] == kind]
        flipped = [int(r['neurons']) for r in mine if r['flipped'] == 'True']
        assert int(summary[0][f'searched_{kind}']) == len(mine)
        assert int(summary[0][f'censored_{kind}']) == len(mine) - len(flipped)
        if flipped:
            assert float(summary[0][f'mean_neurons_{kind}']) == pytest.approx(np.mean(flipped))
        if mine:
            assert float(summary[0][f'restricted_mean_neurons_{kind}']) == pytest.approx(
                np.mean([int(r['neurons']) for r in mine]))
    for name in ('retraining', 'neurons'):
        assert os.path.getsize(os.path.join(workdir, 'figures', f'{name}.png')) > 10_000


def test_example_tied_masks_are_deterministic_per_example():
    key = jax.random.PRNGKey(3)
    shape = (50,)
    variant = jnp.array([0, 0.4, 0.2, 0.0])
    a = training_mask(variant, key, 1, 17, jax.random.PRNGKey(9), shape)
    b = training_mask(variant, key, 1, 17, jax.random.PRNGKey(123), shape)  # another step: same mask
    np.testing.assert_array_equal(a, b)
    assert np.all(np.asarray(a[:20]) == 1)  # generalization channels always on
    own = np.asarray(memorization_mask(key, 1, 17, 50, 0.4, 0.2))
    np.testing.assert_array_equal(np.asarray(a[20:]), own[20:])
    assert own[:20].sum() == 0
    trained = evaluation_mask(variant, key, 1, 17, shape, 'as_trained')
    np.testing.assert_array_equal(trained, a)
    exact = [np.flatnonzero(memorization_mask(key, 1, i, 50, 0.4, 0.2, 'exact')) for i in range(30)]
    assert all(len(o) == 6 and o.min() >= 20 for o in exact)  # round(0.2 * 30)
    assert len({tuple(o) for o in exact}) > 25  # examples own different channels
    standard = training_mask(jnp.array([1, 0.0, 0.0, 0.5]), key, 1, 17, jax.random.PRNGKey(0), (4, 4, 100))
    assert 0.4 < float(jnp.mean(standard > 0)) < 0.6 and float(standard.max()) == pytest.approx(2.0)
    assert not np.all(np.asarray(standard[..., 0]) == np.asarray(standard[0, 0, 0]))  # element-wise, not per channel
    assert np.all(np.asarray(evaluation_mask(jnp.array([1, 0.0, 0.0, 0.5]), key, 1, 17, (4, 4, 100), 'drop')) == 1)
    sparse = jnp.array([2, 0.4, 0.0, 0.0])
    fixed = training_mask(sparse, key, 1, 3, jax.random.PRNGKey(0), (4, 4, 100))
    np.testing.assert_array_equal(fixed, training_mask(sparse, key, 1, 99, jax.random.PRNGKey(5), (4, 4, 100)))
    np.testing.assert_array_equal(fixed, evaluation_mask(sparse, key, 1, -1, (4, 4, 100), 'expected'))


def test_the_sparse_baseline_keeps_p_gen_of_the_network():
    """P3 Table 3's "sparse network (s = 0.4)": remaining fraction p_gen = 0.4, scaled by 1 / p_gen (P3's
    FixedDropout(p = 1 - p_gen)); not 0.4 dropped."""
    (sparse,) = [v for v in Settings().variants if v[0] == 'sparse']
    assert sparse[1] == 0.4
    variant = jnp.array([MODES[sparse[0]], *sparse[1:]], jnp.float32)
    for how in ('train', 'expected', 'drop', 'as_trained'):
        mask = np.asarray(training_mask(variant, jax.random.PRNGKey(0), 2, 5, jax.random.PRNGKey(1), (16, 16, 64))
                          if how == 'train' else
                          evaluation_mask(variant, jax.random.PRNGKey(0), 2, 5, (16, 16, 64), how))
        assert abs(np.mean(mask > 0) - 0.4) < 0.02, how
        np.testing.assert_allclose(np.unique(mask), [0.0, 2.5], rtol=1e-6)
        assert abs(mask.mean() - 1.0) < 0.05  # the kept elements carry the expected activation
    with pytest.raises(ConfigError, match=r"keeps the fraction p_gen.*\('sparse', 0.4, 0.0, 0.0\)"):
        Settings(variants=(('sparse', 0.0, 0.0, 0.4),)).validate()


def test_example_tied_analysis_writes_its_table(workdir):
    config = tiny_config(**{'analyses': ('example_tied',)})
    config.analysis.example_tied.epochs = 2
    config.analysis.example_tied.grid_p_gen = (0.5,)
    config.analysis.example_tied.grid_p_mem = (0.25,)
    run_analyses(config, workdir, log=quiet)
    rows = read(os.path.join(workdir, 'results/example_tied/table.csv'))
    assert [(r['variant'], r['evaluation']) for r in rows] == [
        (v, e) for v in ('example_tied', 'standard', 'sparse', 'example_tied')
        for e in ('expected', 'drop', 'as_trained')]
    assert all(r['test_accuracy'] == '' for r in rows if r['evaluation'] == 'as_trained')
    assert {r['evaluation']: r['table1'] for r in rows} == {
        'as_trained': 'before: clean, noisy', 'expected': 'before: test', 'drop': 'after: clean, noisy, test'}
    assert 'before->after' in open(os.path.join(workdir, 'results/example_tied/table.txt')).read()
    for r in rows:
        if r['variant'] in ('standard', 'sparse'):  # no memorization channels: every evaluation is the same
            same = [q for q in rows if q['variant'] == r['variant']]
            assert all(q['clean_accuracy'] == r['clean_accuracy'] and q['noisy_accuracy'] == r['noisy_accuracy']
                       for q in same)


def test_table_1_before_is_as_trained_for_training_examples_and_expected_for_test():
    def row(evaluation, clean, noisy, test):
        return {'variant': 'example_tied', 'p_gen': 0.4, 'p_mem': 0.2, 'p_drop': 0.0, 'evaluation': evaluation,
                'clean_accuracy': clean, 'noisy_accuracy': noisy, 'test_accuracy': test}
    text = summary_text([row('expected', 0.95, 0.40, 0.80), row('drop', 0.90, 0.03, 0.83),
                         row('as_trained', 0.999, 0.993, None)])
    line = text.splitlines()[-1]
    assert '0.999 -> 0.900' in line and '0.993 -> 0.030' in line and '0.800 -> 0.830' in line
    assert '0.950 / 0.400' in line  # the training accuracies under expected, apart
    assert 'before = clean and noisy training accuracy as_trained' in text and 'test accuracy expected' in text
