"""P4's training-side additions: per-replica weight decay and the input-gradient record."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs_test import load
from helpers import tiny_config
from memjax.config import to_dict
from memjax.errors import ConfigError
from memjax.experiment import check
from memjax.run import open_run
from memjax.rundir import RunDirectory
from memjax.train.loop import prepare_run, train
from train_test import assert_trees, final_variables, quiet, replica_tree

CONFIG_DIR = os.path.join(os.path.dirname(__file__), '..', 'configs')


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


def _pixel_gradient_magnitude(run, variables, images, labels):
    """G = mean over examples of sum_j |dL/dp_j|, L = cross-entropy of the label, p = image / 255 (eval mode),
    computed here from the model's own forward pass (`memjax.train.input_gradients`, 'eval_pixels')."""
    mean, std = jnp.asarray(run.dataset.mean), jnp.asarray(run.dataset.std)

    def loss(pixels, label):
        logits = run.model.apply(variables, (pixels[None] - mean) / std, train=False).output[0]
        return -jax.nn.log_softmax(logits.astype(jnp.float32))[label]

    pixels = jnp.asarray(images, jnp.float32) / 255.0
    grads = jax.vmap(jax.grad(loss))(pixels, jnp.asarray(labels))
    return float(jnp.abs(grads).reshape(grads.shape[0], -1).sum(axis=1).mean())


def test_input_gradients_are_recorded_every_epoch(tmp_path):
    """The recorded G of each replica at each epoch equals G recomputed from that epoch's checkpoint on the first
    `input_gradient_examples` training images with the replica's own (noisy) labels.

    Would fail on: the true labels instead of the replica's training labels (checked to differ for r = 0.5),
    the gradient taken with respect to the normalised input instead of the [0, 1] pixel (a factor 1 / std), a
    mean instead of a sum over input dimensions, G measured before the epoch's steps or on another replica's
    parameters, other examples than the first n, or BatchNorm in training mode.
    """
    config = tiny_config(**{'train.input_gradients': True, 'train.input_gradient_examples': 16})
    train(config, str(tmp_path / 'run'), log=quiet)
    run = open_run(str(tmp_path / 'run'))
    rows = run.directory.read_metrics()
    values = [r['input_gradient'] for r in rows]
    assert len(values) == 2 * 4 and all(np.isfinite(v) and v > 0 for v in values)
    recorded = {(r['epoch'], r['replica']): r['input_gradient'] for r in rows}
    images = run.dataset.train_images[:16]
    noisy = run.replica_index(0.5, 0)
    labels, true = run.noise['labels'][noisy, :16], run.noise['true_labels'][:16]
    assert (labels != true).any()
    for epoch in (run.final_epoch(), 1):
        for replica in range(2):
            variables = run.replica_variables(epoch, replica)
            expected = _pixel_gradient_magnitude(run, variables, images, run.noise['labels'][replica, :16])
            assert recorded[(epoch, replica)] == pytest.approx(expected, rel=1e-4), (epoch, replica)
    final = run.replica_variables(run.final_epoch(), noisy)
    with_true_labels = _pixel_gradient_magnitude(run, final, images, true)
    assert recorded[(run.final_epoch(), noisy)] != pytest.approx(with_true_labels, rel=1e-2)


def test_shared_labels_give_every_seed_of_a_ratio_one_relabelled_set(tmp_path):
    """P4 section 4: all random-label models of a noise level train on one X_R (noise.shared_across_seeds);
    the default keeps one draw per seed (P1-P3), whose seeds agree on about 1/K of the new labels."""
    for name in ('cifar10_vgg11_p4', 'fashion_mnist_p4'):
        config = load(os.path.join(CONFIG_DIR, f'{name}.py')).get_config()
        assert config.noise.shared_across_seeds is True
        assert config.train.input_gradient_definition == 'train_normalised'
        assert config.train.input_gradient_examples == 0  # every training example
    for name in ('cifar10_r9', 'cifar10_r18', 'fashion_mnist_p3'):
        assert load(os.path.join(CONFIG_DIR, f'{name}.py')).get_config().noise.shared_across_seeds is False
    labels = {}
    for shared in (True, False):
        config = tiny_config(**{'noise.ratios': (0.5, 1.0), 'seeds': (0, 1, 2), 'data.num_train': 256,
                                'noise.shared_across_seeds': shared})
        check(config)
        setup = prepare_run(config, RunDirectory(str(tmp_path / str(shared))))  # draws and saves the labels
        run = open_run(str(tmp_path / str(shared)))
        labels[shared] = {(rep.noise_ratio, rep.seed): (run.noise['labels'][rep.index], run.noise['noise_mask'][rep.index])
                          for rep in run.replicas}
        assert np.array_equal(setup.noise.labels, run.noise['labels'])
        assert to_dict(config)['noise']['shared_across_seeds'] is shared
    for ratio in (0.5, 1.0):
        for seed in (1, 2):
            assert np.array_equal(labels[True][(ratio, seed)][0], labels[True][(ratio, 0)][0])
            assert np.array_equal(labels[True][(ratio, seed)][1], labels[True][(ratio, 0)][1])
            assert np.mean(labels[False][(ratio, seed)][0] == labels[False][(ratio, 0)][0]) < 0.7
    # Nested across ratios (and seeds): D^0.5 lies inside D^1 with the same new labels.
    small, big = labels[True][(0.5, 2)], labels[True][(1.0, 1)]
    assert np.all(big[1][small[1]]) and np.array_equal(small[0][small[1]], big[0][small[1]])
    # The shared draw is the per-seed draw of seed 0.
    assert np.array_equal(labels[True][(1.0, 2)][0], labels[False][(1.0, 0)][0])


def test_a_run_directory_without_the_newer_keys_resumes_as_before(tmp_path):
    """Old runs' config.json lack noise.shared_across_seeds and train.input_gradient_definition: absent
    means the old behaviour (per-seed labels, G on pixels in evaluation mode), so they resume; a run
    trained with shared labels is not resumed with per-seed ones."""
    import json
    from memjax.errors import RunDirectoryError
    workdir = tmp_path / 'old'
    train(tiny_config(**{'train.epochs': 1}), str(workdir), log=quiet)
    saved = json.loads((workdir / 'config.json').read_text())
    del saved['noise']['shared_across_seeds'], saved['train']['input_gradient_definition']
    (workdir / 'config.json').write_text(json.dumps(saved))
    lines = []
    train(tiny_config(**{'train.epochs': 1}), str(workdir), log=lines.append)  # found finished, not refused
    assert any('already' in line or 'complete' in line for line in lines), lines
    with pytest.raises(RunDirectoryError, match='noise.shared_across_seeds: False -> True'):
        train(tiny_config(**{'train.epochs': 1, 'noise.shared_across_seeds': True}), str(workdir), log=quiet)


def test_p4_input_gradients_from_the_record_equal_those_from_checkpoints(tmp_path):
    """P4's definition (normalised input, training mode, every training example) recorded during
    training equals the analysis's measurement on the kept checkpoints, and rows name it."""
    import csv
    from memjax.analysis.runner import run_analyses
    config = tiny_config(**{'noise.ratios': (0.0, 1.0), 'train.epochs': 2, 'train.input_gradients': True,
                            'train.input_gradient_definition': 'train_normalised',
                            'train.input_gradient_examples': 0, 'data.num_train': 72})
    workdir = str(tmp_path / 'run')
    train(config, workdir, log=quiet)
    config.analyses = ('input_gradients',)
    tables = {}
    for source in ('training', 'checkpoints'):
        config.analysis.input_gradients.source = source
        config.analysis.input_gradients.num_examples = 0
        run_analyses(config, workdir, log=quiet)
        with open(f'{workdir}/results/input_gradients/input_gradients.csv') as f:
            tables[source] = list(csv.DictReader(f))
    for source, rows in tables.items():
        assert {(r['definition'], r['examples']) for r in rows} == {('train_normalised', '72')}
        assert all('normalised input' in r['units'] for r in rows)
    a = {(r['epoch'], r['replica']): float(r['input_gradient']) for r in tables['training']}
    b = {(r['epoch'], r['replica']): float(r['input_gradient']) for r in tables['checkpoints']}
    assert set(a) == set(b) and len(a) == 3 * 2
    np.testing.assert_allclose([a[k] for k in sorted(a)], [b[k] for k in sorted(a)], rtol=1e-4)
    config.analysis.input_gradients.source, config.analysis.input_gradients.definition = 'training', 'eval_pixels'
    with pytest.raises(ConfigError, match="recorded G as 'train_normalised'"):
        run_analyses(config, workdir, log=quiet)
