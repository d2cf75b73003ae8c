"""The weight_change analysis: each unit's relative distance from initialisation, against NumPy."""

import csv
import os

import numpy as np
import pytest

from helpers import tiny_config
from memjax.analysis.runner import run_analyses
from memjax.run import open_run
from memjax.train.loop import train


@pytest.fixture(scope='module')
def analysed(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp('weights') / 'run')
    config = tiny_config(**{'analyses': ('weight_change',), 'analysis.weight_change.granularity': 'layer'})
    train(config, workdir, log=lambda _: None)
    run_analyses(config, workdir, log=lambda _: None)
    with open(os.path.join(workdir, 'results', 'weight_change', 'weight_change.csv')) as f:
        return open_run(workdir), list(csv.DictReader(f))


def test_distances_equal_numpy_on_every_unit_replica_and_epoch(analysed):
    run, rows = analysed
    assert {r['unit'] for r in rows} == set(run.model.layer_names)
    assert {int(r['epoch']) for r in rows} == set(run.epochs())
    first, last = run.checkpoints.load_epoch(0)['params'], run.checkpoints.load_epoch(run.final_epoch())['params']
    for row in rows:
        i, epoch, unit = int(row['replica']), int(row['epoch']), row['unit']
        now = run.checkpoints.load_epoch(epoch)['params']
        flat = lambda params: np.concatenate([np.ravel(x[i]) for x in _leaves(params[unit])]).astype(np.float64)
        a, b, c = flat(now), flat(first), flat(last)
        assert float(row['from_init']) == pytest.approx(np.linalg.norm(a - b) / np.linalg.norm(b), rel=1e-6)
        assert float(row['from_final']) == pytest.approx(np.linalg.norm(a - c) / np.linalg.norm(c), rel=1e-6)
    at = lambda epoch, key: [float(r[key]) for r in rows if int(r['epoch']) == epoch]
    assert all(v == 0 for v in at(0, 'from_init')) and all(v == 0 for v in at(run.final_epoch(), 'from_final'))
    assert all(v > 0 for v in at(run.final_epoch(), 'from_init'))  # the models trained
    assert os.path.getsize(os.path.join(run.directory.path, 'figures', 'weight_change.png')) > 10_000


def _leaves(tree):
    return [leaf for key in sorted(tree) for leaf in _leaves(tree[key])] if isinstance(tree, dict) else [tree]
