"""P4's analyses from a config: input gradients (record == checkpoints) and the dissimilarity table."""

import csv
import os

import numpy as np
import pytest

from helpers import tiny_config
from memjax.analysis.runner import run_analyses
from memjax.errors import ConfigError
from memjax.experiment import check
from memjax.train.loop import train
from train_test import quiet


def read(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp('p4')
    config = tiny_config(**{'noise.ratios': (0.0, 1.0), 'seeds': (0, 1), 'data.num_train': 128,
                            'train.epochs': 2, 'train.input_gradients': True, 'train.input_gradient_examples': 32})
    train(config, str(root / 'a'), log=quiet)
    other = tiny_config(**{'noise.ratios': (0.0,), 'data.num_train': 128, 'train.epochs': 1, 'model.width': 6})
    train(other, str(root / 'b'), log=quiet)
    return root, config


def test_input_gradients_from_the_record_equal_those_from_checkpoints(runs):
    root, config = runs
    config.analyses = ('input_gradients',)
    run_analyses(config, str(root / 'a'), log=quiet)
    recorded = read(str(root / 'a' / 'results' / 'input_gradients' / 'input_gradients.csv'))
    config.analysis.input_gradients.source = 'checkpoints'
    config.analysis.input_gradients.num_examples = 32
    run_analyses(config, str(root / 'a'), log=quiet)
    computed = read(str(root / 'a' / 'results' / 'input_gradients' / 'input_gradients.csv'))
    assert {r['source'] for r in recorded} == {'training'} and {r['source'] for r in computed} == {'checkpoints'}
    key = lambda r: (int(r['epoch']), int(r['replica']))
    a = {key(r): float(r['input_gradient']) for r in recorded}
    b = {key(r): float(r['input_gradient']) for r in computed}
    assert set(a) == set(b) and len(a) == 4 * 3
    np.testing.assert_allclose([a[k] for k in sorted(a)], [b[k] for k in sorted(a)], rtol=1e-4)


def test_dissimilarity_table_covers_every_ordered_pair_of_both_runs(runs):
    root, config = runs
    config.analyses = ('dissimilarity',)
    d = config.analysis.dissimilarity
    d.generator_epochs, d.generator_batch_size, d.generator_width = 1, 32, 8
    d.num_seeds, d.iterations = 2, 3
    d.other_runs = (str(root / 'b'),)
    run_analyses(config, str(root / 'a'), log=quiet)
    rows = read(str(root / 'a' / 'results' / 'dissimilarity' / 'dissimilarity.csv'))
    assert len(rows) == 5 * 5  # 4 replicas of this run + 1 of the other, every ordered pair
    for r in rows:
        if r['run_a'] == r['run_b'] and r['replica_a'] == r['replica_b']:
            assert abs(float(r['dissimilarity'])) < 1e-5  # KL of a model with itself
        else:
            assert float(r['dissimilarity']) >= 0
    assert {r['run_b'] for r in rows} == {'this run', str(root / 'b')}
    for name in ('dissimilarity_images', 'generator_samples', 'dissimilarity_vs_noise'):
        assert os.path.exists(root / 'a' / 'figures' / f'{name}.png')
    assert os.path.isdir(root / 'a' / 'generator')


def test_unknown_other_run_is_one_error_at_start():
    config = tiny_config(**{'analyses': ('dissimilarity',)})
    config.analysis.dissimilarity.other_runs = ('/nonexistent/run',)
    with pytest.raises(ConfigError, match="other_runs has '/nonexistent/run', which holds no memjax run"):
        check(config)
