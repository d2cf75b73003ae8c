"""The P5 manifolds analysis: which examples form which manifold, the run from a config, P5's units."""

import csv
import importlib.util
import os
import warnings

import numpy as np
import pytest

from helpers import tiny_config
from memjax.analysis.geometry.mftma import manifold_analysis
from memjax.analysis.geometry.manifolds import GRANULARITY, Settings, manifold_examples
from memjax.analysis.localization.layer_groups import chosen_units
from memjax.analysis.runner import run_analyses
from memjax.errors import ConfigError
from memjax.config import DATASETS
from memjax.experiment import check
from memjax.models import model_from_config
from memjax.report.p3_plots import last_k_label
from memjax.run import open_run
from memjax.train.loop import train
from train_test import quiet


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp('manifolds') / 'run')
    config = tiny_config(**{'data.num_train': 128, 'train.epochs': 2, 'analyses': ('manifolds',)})
    config.analysis.manifolds.examples_per_class = 4
    config.analysis.manifolds.min_examples = 3
    config.analysis.manifolds.n_t = 20
    config.analysis.manifolds.stages = ('conv3', 'fc4')
    config.analysis.manifolds.epochs = (2,)
    config.analysis.manifolds.solver_iterations = 2000
    train(config, workdir, log=quiet)
    return workdir, config


def test_manifolds_group_examples_as_p5_defines_them(trained):
    run = open_run(trained[0])
    settings = Settings(examples_per_class=4, min_examples=3)
    noisy = run.replica_index(0.5, 0)
    groups = manifold_examples(run, noisy, settings, [0, 1, 2, 3])
    true, labels, mask = run.noise['true_labels'], run.noise['labels'][noisy], run.noise['noise_mask'][noisy]
    for c, idx in enumerate(groups['unpermuted']):
        assert len(idx) == 4 and np.all(true[idx] == c) and not mask[idx].any()
    permuted = np.concatenate(groups['permuted'])
    assert mask[permuted].all()
    for idx in groups['permuted']:
        assert len(set(labels[idx])) == 1  # grouped by the training (noisy) label
    restored = np.concatenate(groups['restored'])
    assert set(restored) <= set(permuted)  # the same relabelled examples ...
    for idx in groups['restored']:
        assert len(set(true[idx])) == 1  # ... grouped by their true label
    clean = manifold_examples(run, run.replica_index(0.0, 0), settings, [0, 1, 2, 3])
    assert set(clean) == {'unpermuted'}


def test_manifolds_analysis_writes_rows_and_figures(trained):
    """Each recomputed row (r = 0.5 replica, final epoch, every layer and kind) equals MFTMA run here on that
    layer's flattened features of that replica at that epoch, for the examples P5's definition groups.

    Would fail on: features of another layer, epoch or replica (layers or checkpoints paired wrongly), examples
    scattered between manifolds (a wrong position map), kinds swapped (permuted and restored groups differ),
    mean-pooled instead of flattened features, or settings (kappa, n_t, seed) not passed to MFTMA.
    """
    workdir, config = trained
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', UserWarning)  # tiny manifolds may reach the small iteration cap
        run_analyses(config, workdir, log=quiet)
    with open(os.path.join(workdir, 'results', 'manifolds', 'manifolds.csv')) as f:
        rows = list(csv.DictReader(f))
    kinds = {(r['noise_ratio'], r['kind']) for r in rows}
    assert ('0.5', 'permuted') in kinds and ('0.5', 'restored') in kinds and ('0.0', 'unpermuted') in kinds
    assert ('0.0', 'permuted') not in kinds
    assert all(float(r['capacity']) > 0 and float(r['radius']) > 0 for r in rows)
    assert {r['layer'] for r in rows} == {'conv3', 'fc4'} and {r['granularity'] for r in rows} == {'stage'}
    assert os.path.getsize(os.path.join(workdir, 'figures', 'manifolds_r0.5_s0.png')) > 10_000

    run = open_run(workdir)
    s = Settings.from_config(config.analysis.manifolds)
    noisy, epoch = run.replica_index(0.5, 0), 2
    groups = manifold_examples(run, noisy, s, [0, 1, 2, 3])
    variables = run.replica_variables(epoch, noisy)
    written = {(r['layer'], r['kind']): r for r in rows if int(r['replica']) == noisy and int(r['epoch']) == epoch}
    for layer in ('conv3', 'fc4'):
        for kind in ('permuted', 'restored'):
            manifolds = [np.asarray(run.runner.features(variables, run.dataset.train_images[idx],
                                                        outputs=(layer,))[0]) for idx in groups[kind]]
            with warnings.catch_warnings():
                warnings.simplefilter('ignore', UserWarning)
                expected = manifold_analysis(manifolds, kappa=s.kappa, n_t=s.n_t, seed=s.seed,
                                             max_features=s.max_features, max_iters=s.solver_iterations)
            row = written[(layer, kind)]
            for key in ('capacity', 'radius', 'dimension'):
                assert float(row[key]) == pytest.approx(expected[key], rel=1e-3, abs=1e-6), (layer, kind, key)
    assert written[('fc4', 'permuted')]['radius'] != written[('fc4', 'restored')]['radius']


def test_too_few_examples_per_class_names_the_key(trained):
    workdir, config = trained
    config = tiny_config(**{'data.num_train': 128, 'train.epochs': 2, 'analyses': ('manifolds',)})
    config.analysis.manifolds.examples_per_class = 1000
    with pytest.raises(ConfigError, match='analysis.manifolds.examples_per_class=1000 is more than'):
        run_analyses(config, workdir, log=quiet)
    config.analysis.manifolds.stages = ('nope',)
    with pytest.raises(ConfigError, match="analysis.manifolds.stages names stage 'nope'"):
        check(config)


def test_restored_manifolds_are_left_out_when_fewer_than_two_classes_have_enough():
    import types
    # classes 0 and 1; the relabelled examples (noisy labels 0/1) all truly belong to class 2 (not analysed).
    true = np.array([0, 0, 1, 1, 2, 2, 2, 2])
    noisy = np.array([0, 0, 1, 1, 0, 0, 1, 1])
    mask = noisy != true
    run = types.SimpleNamespace(noise={'true_labels': true, 'labels': noisy[None], 'noise_mask': mask[None]},
                                replicas=[types.SimpleNamespace(name='r=0.5')])
    out = manifold_examples(run, 0, Settings(examples_per_class=2, min_examples=2), [0, 1])
    assert set(out) == {'unpermuted', 'permuted'}


def _config(name):
    path = os.path.join(os.path.dirname(__file__), '..', 'configs', f'{name}.py')
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


@pytest.mark.parametrize('name', ['cifar10_r18_p5', 'fashion_mnist_p5'])
def test_p5_configs_rewind_the_units_their_manifolds_are_measured_on(name):
    """P5's rewinding and geometry speak of the same layers: "last 1" is the last manifold unit, not P3's
    classifier group, and "last 2" the last two of them (for ResNet-18: head and layer4.1, not all of layer4)."""
    config = _config(name)
    settings = check(config)
    model = model_from_config(config.model, DATASETS[config.data.name][1])
    rewound = [u.name for u in chosen_units(model, settings['rewinding'].granularity)]
    measured = list(model.select_stages(settings['manifolds'].stages, 'analysis.manifolds.stages'))
    assert settings['rewinding'].granularity == GRANULARITY
    assert rewound == measured
    if name == 'cifar10_r18_p5':
        assert rewound[-2:] == ['layer4.1', 'head']
        assert last_k_label(rewound, 2) == 'last 2: layer4.1..head' and last_k_label(rewound, 1) == 'last 1: head'
