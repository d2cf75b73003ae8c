"""P4's analyses from a config: input gradients (record == checkpoints) and the dissimilarity table."""

import csv
import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from helpers import tiny_config
from memjax import main
from memjax.analysis.dissection import dissimilarity
from memjax.analysis.runner import run_analyses
from memjax.errors import ConfigError
from memjax.experiment import check
from memjax.run import open_run
from memjax.train.faults import Poison
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
    # Another architecture on the same data, with P4's shared draw: its r = 1 labels are those of seed 0.
    other = tiny_config(**{'noise.ratios': (0.0, 1.0), 'data.num_train': 128, 'train.epochs': 1, 'model.width': 6,
                           'noise.shared_across_seeds': True})
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


def test_dissimilarity_table_covers_every_ordered_pair_and_says_which_pairs_share_labels(runs):
    """Run a draws labels per seed (its r = 1 seeds differ), run b shares seed 0's draw; the duplicate
    entries of b (a trailing slash, a symlink) count once."""
    root, config = runs
    config.analyses = ('dissimilarity',)
    d = config.analysis.dissimilarity
    d.generator_epochs, d.generator_batch_size, d.generator_width = 1, 32, 8
    d.num_seeds, d.iterations = 2, 3
    os.symlink(root / 'b', root / 'b_link')
    d.other_runs = (str(root / 'b'), str(root / 'b') + '/', str(root / 'b_link'))
    lines = []
    run_analyses(config, str(root / 'a'), log=lines.append)
    assert any('2 duplicate entries of other_runs dropped' in line for line in lines)
    rows = read(str(root / 'a' / 'results' / 'dissimilarity' / 'dissimilarity.csv'))
    assert len(rows) == 6 * 6  # 4 replicas of this run + 2 of the other, every ordered pair
    for r in rows:
        if r['run_a'] == r['run_b'] and r['replica_a'] == r['replica_b']:
            assert abs(float(r['dissimilarity'])) < 1e-5  # KL of a model with itself
        else:
            assert float(r['dissimilarity']) >= 0
    b = os.path.realpath(root / 'b')
    assert {r['run_b'] for r in rows} == {'this run', b}
    same = {(r['run_a'], r['noise_ratio_a'], r['seed_a'], r['run_b'], r['noise_ratio_b'], r['seed_b']):
            r['same_labels'] for r in rows}
    this = 'this run'
    assert same[(this, '1.0', '0', this, '1.0', '1')] == 'False'   # per-seed draws: other X_R
    assert same[(this, '0.0', '0', this, '0.0', '1')] == 'True'    # true labels are shared
    assert same[(this, '1.0', '0', b, '1.0', '0')] == 'True'       # b's shared draw = seed 0's labels
    assert same[(this, '1.0', '1', b, '1.0', '0')] == 'False'
    assert same[(this, '0.0', '0', this, '1.0', '0')] == 'False'
    for name in ('dissimilarity_images', 'generator_samples', 'dissimilarity_vs_noise', 'dissimilarity_bars'):
        assert os.path.exists(root / 'a' / 'figures' / f'{name}.png')
    assert os.path.isdir(root / 'a' / 'generator')
    numbers = {k: [float(r['dissimilarity']) for r in rows if r['run_a'] == this and r['seed_a'] == '0'
                   and r['noise_ratio_a'] == '1.0' and r['noise_ratio_b'] == '1.0' and (r['run_b'], r['seed_b']) == k]
               for k in ((this, '1'), (b, '0'))}
    parsed = [{**r, 'noise_ratio_a': float(r['noise_ratio_a']), 'noise_ratio_b': float(r['noise_ratio_b']),
               'same_labels': r['same_labels'] == 'True', 'dissimilarity': float(r['dissimilarity'])} for r in rows]
    # Dist(a, b) recomputed here (P4 eq. 2): a's maximising images (images.npz) through f_a and f_b, the KL of
    # softmax f_a from softmax f_b averaged over classes, then mean and std (ddof 0) over seeds. Would fail on
    # a swapped KL, b's images instead of a's, rows and columns transposed, replicas or runs paired with the
    # wrong checkpoints, or the std over classes instead of seeds.
    saved = np.load(root / 'a' / 'results' / 'dissimilarity' / 'images.npz')
    run_a, run_b = open_run(str(root / 'a')), open_run(b)
    one, two = run_a.replica_index(1.0, 0), run_a.replica_index(1.0, 1)

    def logits(run, replica, images):
        flat = jnp.asarray(images.reshape(-1, *images.shape[-3:]))
        out = run.runner.pixel_logits(run.replica_variables(run.final_epoch(), replica), flat)
        return np.asarray(out, np.float64).reshape(*images.shape[:2], -1)  # [C, S, K]

    def dist(images, p_logits, q_logits):
        log_p = p_logits - np.log(np.exp(p_logits).sum(-1, keepdims=True))
        log_q = q_logits - np.log(np.exp(q_logits).sum(-1, keepdims=True))
        per_seed = (np.exp(log_p) * (log_p - log_q)).sum(-1).mean(0)  # [S]
        return per_seed.mean(), per_seed.std()

    def row(a, run_b_name, seed_b, ratio_b='1.0'):
        (r,) = [r for r in rows if r['run_a'] == this and r['noise_ratio_a'] == '1.0' and r['seed_a'] == str(a)
                and r['run_b'] == run_b_name and r['noise_ratio_b'] == ratio_b and r['seed_b'] == str(seed_b)]
        return float(r['dissimilarity']), float(r['dissimilarity_std'])

    for a, (other_run, replica_b, name_b, seed_b) in ((one, (run_a, two, this, 1)), (two, (run_a, one, this, 0)),
                                                      (one, (run_b, run_b.replica_index(1.0, 0), b, 0))):
        images = saved['images'][a]  # [C, S, H, W, C_img]
        expected = dist(images, logits(run_a, a, images), logits(other_run, replica_b, images))
        seed_a = run_a.replicas[a].seed
        assert row(seed_a, name_b, seed_b) == pytest.approx(expected, rel=2e-3, abs=1e-6), (a, name_b, seed_b)
    assert row(0, this, 1) != pytest.approx(row(1, this, 0), rel=1e-3)  # asymmetric: the images are a's
    bars = dissimilarity._summary(parsed)
    assert set(bars) == {'true labels: other seed', 'r=1 other X_R: other seed', 'true labels: b',
                         'r=1 same X_R: b', 'r=1 other X_R: b'}
    assert bars['r=1 same X_R: b'][0] == pytest.approx(numbers[(b, '0')][0])
    curves = dissimilarity.noise_curves(parsed)
    assert set(curves) == {'same X_R', 'other X_R'} and set(curves['same X_R']) == {0.0}
    assert set(curves['other X_R']) == {1.0}


def test_changing_the_generator_width_names_the_generator_dir_key(runs):
    root, config = runs
    config.analyses = ('dissimilarity',)
    d = config.analysis.dissimilarity
    d.generator_epochs, d.generator_batch_size, d.generator_width = 1, 32, 8
    d.num_seeds, d.iterations, d.other_runs = 2, 3, ()
    if not os.path.exists(root / 'a' / 'generator' / 'generator.json'):
        run_analyses(config, str(root / 'a'), log=quiet)
    d.generator_width = 10
    with pytest.raises(ConfigError, match=r'generator_width=10 \(trained: 8\).*analysis.dissimilarity.generator_dir to another folder'):
        check(config, str(root / 'a'))  # at start-up, before any work
    d.generator_dir = str(root / 'gan10')
    check(config, str(root / 'a'))
    run_analyses(config, str(root / 'a'), log=quiet)
    with open(root / 'gan10' / 'generator.json') as f:
        assert json.load(f)['width'] == 10
    with open(root / 'a' / 'generator' / 'generator.json') as f:
        assert json.load(f)['width'] == 8  # the first GAN is kept


def _interrupt_after_epoch_1(line):
    if line.startswith('epoch   1/'):
        raise KeyboardInterrupt


@pytest.fixture(scope='module')
def bad_runs(tmp_path_factory):
    """An unfinished run (epoch 1 of 3), a diverged one and one of 3 classes (this run: 4)."""
    root = tmp_path_factory.mktemp('bad')
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(**{'train.epochs': 3}), str(root / 'unfinished'), log=_interrupt_after_epoch_1)
    train(tiny_config(**{'train.epochs': 1}), str(root / 'diverged'), log=quiet, faults=[Poison(1, 1)])
    train(tiny_config(**{'train.epochs': 1, 'data.num_classes': 3}), str(root / 'classes'), log=quiet)
    return root


@pytest.mark.parametrize('entry, message', [
    ('unfinished', r'not fully trained \(epoch 1 of 3'),
    ('diverged', 'whose replicas r=0.5,seed=0 diverged'),
    ('classes', r'with 3 classes, but this run.s are \[8, 8, 1\] with 4 classes'),
    ('self', "this run's own --workdir"),
])
def test_bad_other_runs_are_refused_before_this_run_trains(bad_runs, entry, message):
    config = tiny_config(**{'analyses': ('dissimilarity',)})
    fresh = bad_runs / f'fresh_{entry}'
    config.analysis.dissimilarity.other_runs = (str(fresh) + '/.' if entry == 'self' else str(bad_runs / entry),)
    with pytest.raises(ConfigError, match=message):
        main.run(config, str(fresh), log=quiet)
    assert not os.path.exists(fresh)  # refused at start-up: nothing trained, nothing written
    if entry != 'self':  # also when the analyses run on a trained run: before the generator trains
        trained = bad_runs / 'this'
        if not os.path.exists(trained / 'status.json'):
            train(tiny_config(), str(trained), log=quiet)
        with pytest.raises(ConfigError, match=message):
            run_analyses(config, str(trained), log=quiet)
        assert not os.path.exists(trained / 'generator')


def test_unknown_other_run_is_one_error_at_start(tmp_path):
    config = tiny_config(**{'analyses': ('dissimilarity',)})
    config.analysis.dissimilarity.other_runs = ('/nonexistent/run',)
    with pytest.raises(ConfigError, match="other_runs has '/nonexistent/run', which holds no memjax run"):
        check(config, str(tmp_path / 'run'))
