"""P4's training-side additions: per-replica weight decay and the input-gradient record."""

import numpy as np
import pytest

from helpers import tiny_config
from memjax.errors import ConfigError
from memjax.experiment import check
from memjax.run import open_run
from memjax.train.loop import train
from train_test import assert_trees, final_variables, quiet, replica_tree


def test_per_ratio_weight_decay_equals_the_replica_trained_alone(tmp_path):
    group = tiny_config(**{'noise.ratios': (0.0, 1.0), 'train.weight_decay': 1e-2,
                           'train.weight_decay_by_ratio': ((1.0, 0.0),), 'train.strategy': 'vmap'})
    alone = tiny_config(**{'noise.ratios': (1.0,), 'train.weight_decay': 0.0})
    decayed = tiny_config(**{'noise.ratios': (0.0,), 'train.weight_decay': 1e-2})
    for name, config in (('group', group), ('alone', alone), ('decayed', decayed)):
        train(config, str(tmp_path / name), log=quiet)
    grouped = final_variables(str(tmp_path / 'group'))
    assert_trees(replica_tree(grouped, 1), replica_tree(final_variables(str(tmp_path / 'alone')), 0), exact=False)
    assert_trees(replica_tree(grouped, 0), replica_tree(final_variables(str(tmp_path / 'decayed')), 0), exact=False)
    with pytest.raises(AssertionError):  # the decay matters: r = 1 without its own value would differ
        assert_trees(replica_tree(grouped, 1), replica_tree(grouped, 0), exact=False)
    with pytest.raises(ConfigError, match='train.weight_decay_by_ratio has'):
        check(tiny_config(**{'train.weight_decay_by_ratio': ((0.3, 0.0),)}))


def test_input_gradients_are_recorded_every_epoch(tmp_path):
    config = tiny_config(**{'train.input_gradients': True, 'train.input_gradient_examples': 16})
    train(config, str(tmp_path / 'run'), log=quiet)
    rows = open_run(str(tmp_path / 'run')).directory.read_metrics()
    values = [r['input_gradient'] for r in rows]
    assert len(values) == 2 * 4 and all(np.isfinite(v) and v > 0 for v in values)
