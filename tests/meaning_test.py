"""Tests that pin what the P1/P2 analyses mean, each against an answer computed independently.

One tiny run (r = 0, 0.25, 0.5; seeds 0, 1: six replicas) serves them all.
"""

import csv
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import tiny_config
from memjax.analysis.runner import run_analyses
from memjax.analysis.stage_training import train_unit
from memjax.analysis.stitching import finetune as finetune_lib
from memjax.analysis.stitching import stitch_trainer as stitch_trainer_lib
from memjax.analysis.stitching.stitch_trainer import STEM_STAGES, group_ends, stitch_points
from memjax.data.pipeline import normalize
from memjax.engine.lifting import Lifting
from memjax.errors import ConfigError
from memjax.models import build_model
from memjax.run import open_run
from memjax.train.loop import train
from memjax.train.state import OptimizerSpec

quiet = lambda _: None
RATIOS, SEEDS = (0.0, 0.25, 0.5), (0, 1)


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp('meaning') / 'run')
    train(tiny_config(**{'noise.ratios': RATIOS, 'seeds': SEEDS}), workdir, log=quiet)
    return open_run(workdir)


def config(**overrides):
    return tiny_config(**{'noise.ratios': RATIOS, 'seeds': SEEDS, **overrides})


def rows_of(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def stitched_predictions(model, base, head, point, images, data):
    """head(S(base(x))) with S = identity, written out directly."""
    h = model.apply(base, normalize(images, data.mean, data.std), stop=point).output
    return np.argmax(np.asarray(model.apply(head, h, start=point).output), -1)


def test_stitching_directions_models_and_memorization_labels(run, monkeypatch):
    """S = identity, never updated (learning rate 0): the stitched model is head(base(x)), so each row's
    accuracies follow from which replica gave the base, which the head, and whose D_n^r and labels count."""
    seen = []
    original_train = stitch_trainer_lib.StitchTrainer.train

    def spy(self, stitch, images, labels):
        seen.append((np.asarray(images), np.asarray(labels)))
        return original_train(self, stitch, images, labels)
    monkeypatch.setattr(stitch_trainer_lib.StitchTrainer, 'train', spy)
    c = config(**{'analyses': ('stitching',)})
    c.analysis.stitching.init = 'identity'
    c.analysis.stitching.learning_rate = 0.0
    c.analysis.stitching.epochs = 1
    c.analysis.stitching.batch_size = 8
    c.analysis.stitching.points = ('conv2', 'fc2')
    run_analyses(c, run.directory.path, log=quiet)
    rows = rows_of(os.path.join(run.directory.path, 'results', 'stitching', 'stitching.csv'))
    model, data, final = run.model, run.dataset, run.final_epoch()
    images = np.concatenate([data.train_images, data.test_images])
    n = data.train_images.shape[0]
    labels, mask = run.noise['labels'], run.noise['noise_mask'].astype(bool)
    power = 0
    for row in rows:
        r, seed, depth = float(row['noise_ratio']), int(row['seed']), int(row['depth'])
        noisy, clean = run.replica_index(r, seed), run.replica_index(0.0, seed)
        base, head = (clean, noisy) if row['direction'] == 'clean_to_noisy' else (noisy, clean)
        expect = stitched_predictions(model, run.replica_variables(final, base), run.replica_variables(final, head),
                                      depth, images, data)
        test = np.mean(expect[n:] == data.test_labels)
        memorization = np.mean(expect[:n][mask[noisy]] == labels[noisy][mask[noisy]])
        true_on_noisy = np.mean(expect[:n][mask[noisy]] == data.train_labels[mask[noisy]])
        assert float(row['test_accuracy']) == pytest.approx(test, abs=1e-9), row
        assert float(row['memorization_accuracy']) == pytest.approx(memorization, abs=1e-9), row
        assert float(row['noisy_true_accuracy']) == pytest.approx(true_on_noisy, abs=1e-9), row
        # Test power: the swapped direction, or another replica's noisy labels, would give other numbers.
        swapped = stitched_predictions(model, run.replica_variables(final, head), run.replica_variables(final, base),
                                       depth, images, data)
        other = run.replica_index(0.25 if r == 0.5 else 0.5, seed)
        power += (np.mean(swapped[:n][mask[noisy]] == labels[noisy][mask[noisy]]) != memorization) + \
            (np.mean(expect[:n][mask[other]] == labels[other][mask[other]]) != memorization)
    assert len(rows) == 2 * 2 * 2 * 2 and power >= len(rows)
    # S saw the validation split with its correct labels, and nothing else.
    train_rows = {x.tobytes() for x in data.train_images} | {x.tobytes() for x in data.test_images}
    assert seen
    for seen_images, seen_labels in seen:
        np.testing.assert_array_equal(seen_images, data.val_images)
        np.testing.assert_array_equal(seen_labels, data.val_labels)
        assert not {x.tobytes() for x in seen_images} & train_rows


def test_stitch_layer_training_batches_come_from_the_validation_split_only(run, monkeypatch):
    """Every batch S trains on, and the least-squares fit, draws only validation examples."""
    data = run.dataset
    val_rows = {x.tobytes() for x in data.val_images}
    batches = []
    trainer_cls = stitch_trainer_lib.StitchTrainer
    original_step, original_fit = stitch_trainer_lib.Stitched.step, trainer_cls._fit_least_squares

    def step(self, state, *, idx, images, **kwargs):
        batches.append(np.asarray(images)[np.asarray(idx)])
        return original_step(self, state, idx=idx, images=images, **kwargs)

    def fit(self, stacked, val_images):
        batches.append(val_images)
        return original_fit(self, stacked, val_images)
    monkeypatch.setattr(stitch_trainer_lib.Stitched, 'step', step)
    monkeypatch.setattr(trainer_cls, '_fit_least_squares', fit)
    from memjax.analysis.stitching.stitching import Settings
    jax.config.update('jax_disable_jit', True)  # concrete arrays reach the spy
    try:
        models = jax.tree_util.tree_map(jnp.asarray, run.checkpoints.load_epoch(run.final_epoch()))
        clean = jax.tree_util.tree_map(lambda x: x[0], models)
        heads = jax.tree_util.tree_map(lambda x: x[np.array([2])], models)
        trainer = trainer_cls(run.runner, 1, Settings(epochs=1, batch_size=8), clean, heads, (True, False), 1,
                              Lifting('loop'))
        trainer.train(trainer.init(data.val_images), jnp.asarray(data.val_images), jnp.asarray(data.val_labels))
    finally:
        jax.config.update('jax_disable_jit', False)
    assert len(batches) == 1 + 2  # the fit, then 16 / 8 steps
    for batch in batches:
        assert {x.tobytes() for x in np.asarray(batch)} <= val_rows


def test_noisy_vs_clean_pairs_each_replica_with_the_clean_replica_of_its_seed(run):
    c = config(**{'analyses': ('noisy_vs_clean',)})
    c.analysis.cka.num_examples = 32
    run_analyses(c, run.directory.path, log=quiet)
    result = np.load(os.path.join(run.directory.path, 'results', 'noisy_vs_clean', 'cka.npz'))
    stages, epochs = list(result['stages']), list(result['epochs'])
    model, data = run.model, run.dataset
    images = normalize(data.test_images[:32], data.mean, data.std)

    def features(replica, epoch, stage):
        out = model.apply(run.replica_variables(epoch, replica), images, capture=(stage,)).features[stage]
        return np.asarray(out, np.float64).reshape(32, -1)

    def reference_cka(x, y):
        x, y = x - x.mean(0), y - y.mean(0)
        return np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))

    final, wrong_differs = run.final_epoch(), 0
    for rep in run.replicas:
        own = run.replica_index(0.0, rep.seed)
        other = run.replica_index(0.0, 1 - rep.seed)
        for stage in ('conv2', 'fc3'):
            l = stages.index(stage)
            for epoch in (epochs[0], epochs[-1]):
                t = epochs.index(epoch)
                got = result['cka'][rep.index, l, t]
                x = features(rep.index, epoch, stage)
                assert got == pytest.approx(reference_cka(x, features(own, final, stage)), abs=2e-4)
                wrong_differs += abs(got - reference_cka(x, features(other, final, stage))) > 1e-3
    assert wrong_differs >= len(run.replicas) * 3  # a wrong pairing would fail the assertion above


def test_finetune_on_noisy_true_uses_the_true_labels_of_each_replicas_d_n(run, monkeypatch):
    seen = []
    original = finetune_lib.train_unit

    def spy(*args, labels, indices, **kwargs):
        seen.append((np.asarray(labels), [np.asarray(i) for i in indices]))
        return original(*args, labels=labels, indices=indices, **kwargs)
    monkeypatch.setattr(finetune_lib, 'train_unit', spy)
    c = config(**{'analyses': ('finetune',)})
    c.analysis.finetune.epochs = 1
    c.analysis.finetune.batch_size = 8
    c.analysis.finetune.stages = ('fc4',)
    c.analysis.finetune.datasets = ('noisy_true',)
    run_analyses(c, run.directory.path, log=quiet)
    noisy = [r.index for r in run.replicas if r.noise_ratio > 0]
    data = run.dataset
    assert len(seen) == 1
    labels, indices = seen[0]
    for k, replica in enumerate(noisy):
        expected = np.flatnonzero(run.noise['noise_mask'][replica])  # D_n^r: positions in the train part
        np.testing.assert_array_equal(np.sort(indices[k]), expected)
        np.testing.assert_array_equal(labels[k][indices[k]], data.train_labels[indices[k]])  # TRUE labels
        assert np.any(labels[k][indices[k]] != run.noise['labels'][replica][indices[k]])  # not the noisy ones


def test_fine_tuning_on_a_set_smaller_than_one_batch_trains_on_the_mean_gradient(run):
    data, model = run.dataset, run.model
    stacked = jax.tree_util.tree_map(lambda x: jnp.asarray(x[np.array([2])]),
                                     run.checkpoints.load_epoch(run.final_epoch()))
    pool = jnp.asarray(data.train_images)
    labels = jnp.asarray(data.train_labels[None])
    subset = [np.arange(5)]
    results = []
    unit = model.units('stage')[model.stage_index('fc2')]
    sgd = OptimizerSpec('sgd', 0.5, momentum=0.0)
    for batch in (16, 5):  # 5 examples in a batch of 16 (partial), and exactly one full batch of 5
        variables = train_unit(run.runner, stacked, unit, sgd, batch_size=batch, pool=pool, labels=labels,
                               indices=subset, epochs=1, seed=0, lifting='loop')
        results.append(variables['params']['fc2'])
    changed = jax.tree_util.tree_leaves(jax.tree_util.tree_map(lambda a, b: not np.allclose(a, b),
                                                               results[0], stacked['params']['fc2']))
    assert all(changed)  # it trained
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), *results)
    with pytest.raises(ConfigError, match='empty example set'):
        train_unit(run.runner, stacked, unit, sgd, batch_size=16, pool=pool, labels=labels, indices=[np.arange(0)],
                   epochs=1, seed=0, lifting='loop')


def test_default_stitch_points_are_the_papers():
    cnn = build_model('cnn', 10, 4)
    assert [cnn.stage_names[l - 1] for l in stitch_points(cnn, ())] == ['conv1', 'conv2', 'conv3', 'fc1', 'fc2',
                                                                        'fc3']
    r18 = build_model('resnet18', 10, 4)
    blocks = [f'layer{g}.{i}' for g in range(1, 5) for i in range(2)]
    assert [r18.stage_names[l - 1] for l in stitch_points(r18, ())] == blocks
    assert [r18.stage_names[l - 1] for l in stitch_points(r18, (), include_stem=True)] == ['stem'] + blocks
    assert group_ends(r18.stage_names) == {1: 'layer1.1', 2: 'layer2.1', 3: 'layer3.1', 4: 'layer4.1'}
    assert group_ends(build_model('resnet34', 10, 4).stage_names)[3] == 'layer3.5'
    assert group_ends(cnn.stage_names) == {} and 'stem' in STEM_STAGES


def test_p1_fig2_has_one_line_per_residual_group_for_resnets(tmp_path, monkeypatch):
    from memjax.analysis.stitching.stitching import _vs_noise_lines
    from memjax.report import stitch_plots
    names = build_model('resnet18', 10, 4).stage_names
    depths = set(stitch_points(build_model('resnet18', 10, 4), ()))
    lines = _vs_noise_lines(names, depths)
    assert [names[d - 1] for d in sorted(lines)] == ['layer1.1', 'layer2.1', 'layer3.1', 'layer4.1']
    assert lines[names.index('layer2.1') + 1].startswith('k=2 groups')
    cnn = build_model('cnn', 10, 4).stage_names
    assert sorted(_vs_noise_lines(cnn, {1, 4})) == [1, 4]  # other models: one line per depth
    rows = [{'direction': d, 'noise_ratio': r, 'depth': depth, 'test_accuracy': 0.5}
            for d in ('clean_to_noisy', 'noisy_to_clean') for r in (0.2, 0.5) for depth in depths]
    baselines = [{'model': m, 'noise_ratio': r, 'test_accuracy': 0.6} for m in ('clean', 'noisy') for r in (0.2, 0.5)]
    plotted = []
    original = stitch_plots.plt.Axes.plot
    monkeypatch.setattr(stitch_plots.plt.Axes, 'plot', lambda self, *a, **k: plotted.append(k.get('label'))
                        or original(self, *a, **k))
    stitch_plots.accuracy_vs_noise(str(tmp_path / 'fig.png'), rows, baselines, names, lines)
    assert plotted.count('k=1 groups (after layer1.1)') == 2 and plotted.count('noisy models') == 2
    assert os.path.getsize(tmp_path / 'fig.png') > 10_000
