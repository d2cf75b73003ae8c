"""Stitched models, their layer S, critical depths and one-stage fine-tuning."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import tiny_config
from memjax.analysis.stitching.critical_depths import critical_depths
from memjax.analysis.runner import run_analyses
from memjax.experiment import check
from memjax.analysis.stage_training import train_unit
from memjax.analysis.stitching.stitch_layer import least_squares_params, normal_equations
from memjax.analysis.stitching.stitch_trainer import StitchTrainer, stitch_points
from memjax.analysis.stitching.stitching import Settings as StitchSettings
from memjax.data.pipeline import normalize
from memjax.engine.lifting import Lifting
from memjax.errors import ConfigError
from memjax.run import open_run
from memjax.train.loop import train
from memjax.train.state import OptimizerSpec

quiet = lambda _: None


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp('stitch') / 'run')
    train(tiny_config(**{'noise.ratios': (0.0, 0.25, 0.5)}), workdir, log=quiet)
    return open_run(workdir)


def final_models(run):
    return jax.tree_util.tree_map(jnp.asarray, run.checkpoints.load_epoch(run.final_epoch()))


def take(tree, index):
    return jax.tree_util.tree_map(lambda x: x[index], tree)


def copy(tree):
    return jax.tree_util.tree_map(lambda x: np.array(x), tree)


@pytest.mark.parametrize('strategy', ['loop', 'vmap', 'map'])
def test_identity_stitch_of_a_model_with_itself_reproduces_its_logits(run, strategy):
    models, data = final_models(run), run.dataset
    model = run.model
    images = jnp.asarray(data.test_images)
    reference = model.logits(take(models, 1), normalize(images, data.mean, data.std))
    for point in stitch_points(model, ()):
        trainer = StitchTrainer(run.runner, point, StitchSettings(init='identity'), take(models, 1),
                                take(models, np.array([1, 1])), (True, False), 2, Lifting(strategy))
        logits = trainer.logits(trainer.init(data.val_images), images)
        # Equal up to the rounding of two differently fused XLA programs (S = identity is x @ I + 0).
        for k in range(2):
            np.testing.assert_allclose(logits[k], reference, rtol=1e-5, atol=1e-6)
            np.testing.assert_array_equal(np.argmax(logits[k], -1), np.argmax(reference, -1))


def test_least_squares_recovers_a_known_linear_map():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3, 3, 6)).astype(np.float32)  # conv maps: every position is a sample
    true_kernel = rng.normal(size=(6, 6)).astype(np.float32)
    true_bias = rng.normal(size=6).astype(np.float32)
    y = x @ true_kernel + true_bias
    half = [normal_equations(jnp.asarray(x[i:i + 32]), jnp.asarray(y[i:i + 32])) for i in (0, 32)]
    fitted = least_squares_params(half[0][0] + half[1][0], half[0][1] + half[1][1])
    np.testing.assert_allclose(fitted['kernel'], true_kernel, atol=1e-3)
    np.testing.assert_allclose(fitted['bias'], true_bias, atol=1e-3)


def test_least_squares_stitch_of_a_model_with_itself_is_nearly_exact(run):
    models, data = final_models(run), run.dataset
    trainer = StitchTrainer(run.runner, 2, StitchSettings(init='least_squares'), take(models, 0),
                            take(models, np.array([0])), (True, False), 1, Lifting('loop'))
    stitch = trainer.init(data.val_images)
    np.testing.assert_allclose(stitch['params']['map']['kernel'][0], np.eye(8), atol=2e-3)
    predictions = trainer.predict(stitch, jnp.asarray(data.test_images))
    reference = np.argmax(run.model.logits(take(models, 0), normalize(data.test_images, data.mean, data.std)), -1)
    assert np.mean(predictions[0] == reference) > 0.95


@pytest.mark.parametrize('strategy', ['loop', 'vmap'])
def test_training_s_leaves_base_and_head_bit_identical_and_batched_equals_alone(run, strategy):
    models, data = final_models(run), run.dataset
    settings = StitchSettings(epochs=2, batch_size=8)
    base, heads = take(models, 0), take(models, np.array([1, 2]))
    base_before, heads_before = copy(base), copy(heads)
    val = (jnp.asarray(data.val_images), jnp.asarray(data.val_labels))
    group = StitchTrainer(run.runner, 3, settings, base, heads, (True, False), 2, Lifting(strategy))
    trained, losses = group.train(group.init(data.val_images), *val)
    jax.tree_util.tree_map(np.testing.assert_array_equal, copy(base), base_before)
    jax.tree_util.tree_map(np.testing.assert_array_equal, copy(heads), heads_before)
    assert losses[-1].shape == (2,)
    alone = StitchTrainer(run.runner, 3, StitchSettings(epochs=2, batch_size=8), base, take(models, np.array([2])),
                          (True, False), 1, Lifting('loop'))
    alone_trained, _ = alone.train(alone.init(data.val_images), *val)
    grouped = take(trained, 1)
    single = take(alone_trained, 0)
    check = np.testing.assert_array_equal if strategy == 'loop' else \
        (lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=5e-4))
    jax.tree_util.tree_map(check, grouped, single)


def test_critical_depths_on_hand_made_curves():
    depths = [1, 2, 3, 4, 5]
    c2n = critical_depths('clean_to_noisy', depths, memorization=[0.9, 0.5, 0.12, 0.1, 0.1],
                          test=[0.6, 0.7, 0.79, 0.8, 0.81], chance=0.1, clean_test=0.8,
                          memorization_tolerance=0.05, generalization_tolerance=0.02)
    assert c2n == {'l_c^m': 3, 'l_c^g': 3}
    n2c = critical_depths('noisy_to_clean', depths, memorization=[0.1, 0.11, 0.2, 0.5, 0.8],
                          test=[0.8, 0.79, 0.7, 0.6, 0.5], chance=0.1, clean_test=0.8,
                          memorization_tolerance=0.05, generalization_tolerance=0.02)
    assert n2c == {'l_n^m': 3, 'l_n^g': 2}
    never = critical_depths('noisy_to_clean', depths, [0.1] * 5, [0.5] * 5, 0.1, 0.8, 0.05, 0.02)
    assert never == {'l_n^m': None, 'l_n^g': 0}
    flat = critical_depths('clean_to_noisy', depths, [0.9] * 5, [0.5] * 5, 0.1, 0.8, 0.05, 0.02)
    assert flat == {'l_c^m': None, 'l_c^g': None}


def test_fine_tuning_one_stage_leaves_every_other_stage_bit_identical(run):
    models, data = final_models(run), run.dataset
    model = run.model
    stacked = take(models, np.array([1, 2]))
    before = copy(stacked)
    pool = jnp.asarray(np.concatenate([data.train_images, data.val_images]))
    labels = jnp.asarray(np.broadcast_to(np.concatenate([data.train_labels, data.val_labels]), (2, pool.shape[0])))
    unit = model.units('stage')[model.stage_index('conv2')]
    sets = [np.arange(64, 80), np.arange(0, 40)]  # different sizes: masked steps
    losses = []
    variables = train_unit(run.runner, stacked, unit, OptimizerSpec('sgd', 0.05, momentum=0.0), batch_size=8,
                           pool=pool, labels=labels, indices=sets, epochs=1, seed=0, lifting='loop',
                           after_epoch=lambda epoch, v: losses.append(epoch))
    after = copy(variables)
    for stage in model.stage_names:
        same = stage != 'conv2'
        for kind in ('params', 'batch_stats'):
            if stage not in before[kind]:
                continue
            leaves = zip(jax.tree_util.tree_leaves(before[kind][stage]), jax.tree_util.tree_leaves(after[kind][stage]))
            equal = all(np.array_equal(a, b) for a, b in leaves)
            assert equal == same, (stage, kind)
    assert losses == [1] and all(np.all(np.isfinite(x)) for x in jax.tree_util.tree_leaves(after))


def test_stitching_and_finetune_analyses_write_their_results(run):
    config = tiny_config(**{'noise.ratios': (0.0, 0.25, 0.5), 'analyses': ('stitching', 'finetune')})
    config.analysis.stitching.epochs = 1
    config.analysis.stitching.batch_size = 8
    config.analysis.stitching.points = ('conv1', 'fc1')
    config.analysis.finetune.epochs = 1
    config.analysis.finetune.batch_size = 8
    config.analysis.finetune.stages = ('conv3', 'fc4')
    run_analyses(config, run.directory.path, log=quiet)
    out = os.path.join(run.directory.path, 'results')
    lines = open(os.path.join(out, 'stitching/stitching.csv')).read().splitlines()
    assert len(lines) == 1 + 2 * 2 * 2  # directions x points x noisy replicas
    assert 'init_test_accuracy' in lines[0]
    depths = open(os.path.join(out, 'stitching/critical_depths.csv')).read()
    for name in ('l_c^m', 'l_c^g', 'l_n^m', 'l_n^g'):
        assert name in depths
    finetune = open(os.path.join(out, 'finetune/finetune.csv')).read().splitlines()
    assert len(finetune) == 1 + 2 + 2 * 2 * 2  # before + data sets x stages x noisy replicas
    for name in ('stitching_clean_to_noisy', 'stitching_noisy_to_clean', 'stitching_vs_noise', 'finetune'):
        assert os.path.getsize(os.path.join(run.directory.path, 'figures', f'{name}.png')) > 10_000
    bad = tiny_config(**{'analyses': ('stitching',)})
    bad.analysis.stitching.points = ('fc4',)
    with pytest.raises(ConfigError, match="analysis.stitching.points has 'fc4', the last stage"):
        check(bad)  # before training: names are checked against the model at start-up
    assert os.path.exists(os.path.join(out, 'stitching', 'complete.json'))
    bad = tiny_config(**{'analyses': ('stitching',)})
    bad.analysis.stitching.init = 'bogus'
    with pytest.raises(ConfigError, match="analysis.stitching.init='bogus' is not one of least_squares"):
        check(bad)
    bad = tiny_config(**{'analyses': ('stitching',)})
    bad.analysis.stitching['epochz'] = 3
    with pytest.raises(ConfigError, match="unknown key analysis.stitching.epochz"):
        check(bad)
