import json
import os

import jax
import numpy as np
import pytest

from helpers import tiny_config
from memjax.errors import RunDirectoryError
from memjax.run import open_run
from memjax.train.loop import train


def final_variables(workdir):
    run = open_run(workdir)
    return run.checkpoints.load_epoch(run.final_epoch())


def assert_trees(a, b, exact=True, rtol=2e-4, atol=2e-5):
    check = np.testing.assert_array_equal if exact else (
        lambda x, y: np.testing.assert_allclose(x, y, rtol=rtol, atol=atol))
    jax.tree_util.tree_map(check, a, b)


def replica_tree(tree, i):
    return jax.tree_util.tree_map(lambda x: x[i], tree)


def quiet(_):
    pass


def test_training_writes_the_run_directory(tmp_path):
    workdir = str(tmp_path / 'run')
    train(tiny_config(), workdir, log=quiet)
    for name in ('config.json', 'status.json', 'data.json', 'replicas.json', 'noise.npz', 'metrics.jsonl',
                 'strategy.json'):
        assert os.path.exists(os.path.join(workdir, name)), name
    run = open_run(workdir)
    assert run.epochs() == [0, 1, 2, 3]
    rows = run.directory.read_metrics()
    assert len(rows) == 4 * 2 and {r['epoch'] for r in rows} == {0, 1, 2, 3}
    keys = {'train_loss', 'train_accuracy', 'clean_accuracy', 'memorization_accuracy',
            'noisy_true_accuracy', 'val_accuracy', 'test_accuracy'}
    assert keys <= set(rows[-1])
    noise = run.directory.load_noise()
    assert noise['labels'].shape == (2, 64) and noise['noise_mask'][1].sum() == 32
    assert noise['noise_mask'][0].sum() == 0
    assert rows[0]['memorization_accuracy'] is None and rows[1]['memorization_accuracy'] is not None


def test_same_config_twice_gives_identical_results(tmp_path):
    train(tiny_config(), str(tmp_path / 'a'), log=quiet)
    train(tiny_config(), str(tmp_path / 'b'), log=quiet)
    assert_trees(final_variables(str(tmp_path / 'a')), final_variables(str(tmp_path / 'b')))
    strip = lambda rows: [{k: v for k, v in r.items()} for r in rows]
    assert strip(open_run(str(tmp_path / 'a')).directory.read_metrics()) == \
        strip(open_run(str(tmp_path / 'b')).directory.read_metrics())


def test_strategies_give_the_same_replicas(tmp_path):
    train(tiny_config(**{'train.strategy': 'loop'}), str(tmp_path / 'loop'), log=quiet)
    train(tiny_config(**{'train.strategy': 'vmap'}), str(tmp_path / 'vmap'), log=quiet)
    assert_trees(final_variables(str(tmp_path / 'loop')), final_variables(str(tmp_path / 'vmap')),
                 exact=False)


@pytest.mark.parametrize('strategy', ['loop', 'vmap'])
def test_replica_in_a_group_equals_the_replica_trained_alone(tmp_path, strategy):
    # Two seeds, so the group also has its own data order per replica; BatchNorm must not mix.
    group = tiny_config(**{'train.strategy': strategy, 'noise.ratios': (0.0, 0.5), 'seeds': (0, 1)})
    alone = tiny_config(**{'train.strategy': 'loop', 'noise.ratios': (0.5,), 'seeds': (1,)})
    train(group, str(tmp_path / 'group'), log=quiet)
    train(alone, str(tmp_path / 'alone'), log=quiet)
    grouped = replica_tree(final_variables(str(tmp_path / 'group')), 3)  # (r=0.5, seed=1)
    single = replica_tree(final_variables(str(tmp_path / 'alone')), 0)
    assert_trees(grouped, single, exact=strategy == 'loop')
    assert np.array_equal(open_run(str(tmp_path / 'group')).noise['labels'][3],
                          open_run(str(tmp_path / 'alone')).noise['labels'][0])


def test_replicas_are_independent_by_default_and_share_a_start_on_request(tmp_path):
    from memjax.data.replicas import make_replicas
    from memjax.train.replica_keys import data_keys, init_keys
    for shared in (False, True):
        config = tiny_config(**{'train.epochs': 1, 'train.shared_start': shared})
        train(config, str(tmp_path / str(shared)), log=quiet)
        start = open_run(str(tmp_path / str(shared))).checkpoints.load_epoch(0)
        clean, noisy = replica_tree(start, 0), replica_tree(start, 1)  # r = 0 and r = 0.5, seed 0
        same = all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(clean),
                                                         jax.tree_util.tree_leaves(noisy)))
        assert same == shared
        replicas = make_replicas(config)
        assert np.array_equal(*init_keys(config.train, replicas)) == shared
        assert np.array_equal(*data_keys(config.train, replicas)) == shared


def test_checkpoint_api_round_trip(tmp_path):
    workdir = str(tmp_path / 'run')
    train(tiny_config(**{'checkpoint.every': 2}), workdir, log=quiet)
    run = open_run(workdir)
    assert run.epochs() == [0, 2, 3]  # every 2, plus the initialisation and the last epoch
    everything = run.checkpoints.load_epoch(2)
    replica = run.checkpoints.load_replica(2, 1)
    assert_trees(replica, replica_tree(everything, 1))
    stage = run.checkpoints.load_stage(2, 1, 'conv2')
    assert_trees(stage['params'], replica['params']['conv2'])
    assert_trees(stage['batch_stats'], replica['batch_stats']['conv2'])
    # The restored replica reproduces the accuracy training recorded for it.
    model, data = run.model, run.dataset
    from memjax.data.pipeline import normalize
    logits = model.logits(replica, normalize(data.test_images, data.mean, data.std))
    accuracy = float(np.mean(np.argmax(logits, -1) == data.test_labels))
    recorded = [r for r in run.directory.read_metrics() if r['epoch'] == 2 and r['replica'] == 1][0]
    assert accuracy == pytest.approx(recorded['test_accuracy'], abs=1e-9)


def test_explicit_checkpoint_epochs(tmp_path):
    train(tiny_config(**{'checkpoint.epochs': (1,)}), str(tmp_path / 'run'), log=quiet)
    assert open_run(str(tmp_path / 'run')).epochs() == [0, 1, 3]


def test_replicas_stop_at_the_accuracy_threshold_and_stay_frozen(tmp_path):
    workdir = str(tmp_path / 'run')
    config = tiny_config(**{'train.epochs': 30, 'train.stop_accuracy': 0.9, 'noise.ratios': (0.0,)})
    train(config, workdir, log=quiet)
    run = open_run(workdir)
    status = run.directory.status()
    converged = status['converged_epoch'][0]
    assert 0 < converged < 30 and status['epoch'] == converged
    rows = run.directory.read_metrics()
    assert rows[-1]['train_accuracy'] >= 0.9
    assert all(r['train_accuracy'] < 0.9 for r in rows[:-1])


def test_a_finished_run_is_not_retrained(tmp_path):
    workdir = str(tmp_path / 'run')
    train(tiny_config(), workdir, log=quiet)
    before = os.path.getmtime(os.path.join(workdir, 'metrics.jsonl'))
    messages = []
    train(tiny_config(**{'train.strategy': 'vmap'}), workdir, log=messages.append)  # runtime key only
    assert 'complete' in messages[0]
    assert os.path.getmtime(os.path.join(workdir, 'metrics.jsonl')) == before


def test_workdir_of_another_config_is_refused_and_untouched(tmp_path):
    workdir = str(tmp_path / 'run')
    train(tiny_config(), workdir, log=quiet)
    before = open(os.path.join(workdir, 'config.json')).read()
    with pytest.raises(RunDirectoryError, match=r'train.learning_rate: 0.05 -> 0.1'):
        train(tiny_config(**{'train.learning_rate': 0.1}), workdir, log=quiet)
    assert open(os.path.join(workdir, 'config.json')).read() == before
    stray = tmp_path / 'stray'
    stray.mkdir()
    (stray / 'notes.txt').write_text('keep me')
    with pytest.raises(RunDirectoryError, match='not empty'):
        train(tiny_config(), str(stray), log=quiet)
    assert os.listdir(stray) == ['notes.txt']


def test_auto_strategy_is_a_rule_of_the_machine_and_recorded(tmp_path):
    from memjax.engine.lifting import choose
    assert choose('auto', 3)[0].kind == 'loop' and choose('auto', 1)[0].kind == 'loop'  # this CPU
    assert choose('vmap', 3)[0].kind == 'vmap' and choose('shard', 3)[0].devices == 1
    workdir = str(tmp_path / 'run')
    train(tiny_config(**{'train.strategy': 'auto', 'train.epochs': 1}), workdir, log=quiet)
    record = json.load(open(os.path.join(workdir, 'strategy.json')))
    assert record['strategy'] == 'loop' and record['requested'] == 'auto' and record['backend'] == 'cpu'


def test_bfloat16_with_augmentation_trains(tmp_path):
    workdir = str(tmp_path / 'run')
    train(tiny_config(**{'model.dtype': 'bfloat16', 'data.augment': True, 'train.epochs': 2}), workdir,
          log=quiet)
    rows = open_run(workdir).directory.read_metrics()
    assert all(np.isfinite(r['train_loss']) for r in rows if r['epoch'] > 0)
    variables = final_variables(workdir)
    assert all(x.dtype == np.float32 for x in jax.tree_util.tree_leaves(variables))
