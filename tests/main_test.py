"""The command line: overrides, one-line errors with exit status 2, resume after kill -9."""

import os
import signal
import subprocess
import sys

import pytest

from helpers import tiny_config, xla_flags
from memjax.run import open_run
from memjax.train.faults import KILL_AFTER_EPOCH_ENV
from memjax.train.loop import train
from raw_files_test import write_mnist_like
from train_test import assert_trees, final_variables, quiet

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)


def write_config(tmp_path, **overrides) -> str:
    path = tmp_path / 'tiny_config.py'
    path.write_text(f'import sys\nsys.path.insert(0, {TESTS!r})\nfrom helpers import tiny_config\n'
                    f'def get_config():\n    return tiny_config(**{overrides!r})\n')
    return str(path)


def cli(config_path, workdir, *flags, env=None):
    environment = dict(os.environ, JAX_PLATFORMS='cpu', **(env or {}))
    return subprocess.run([sys.executable, '-m', 'memjax.main', f'--config={config_path}',
                           f'--workdir={workdir}', *flags], cwd=ROOT, env=environment,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize('flags,message', [
    (['--config.data.source=raw', '--config.data.name=imagenet'], "data.name='imagenet' is not one of mnist"),
    (['--config.model.name=resnet7'], "model.name='resnet7' is not one of cnn, resnet9"),
    (["--config.noise.ratios=(0.0,1.5)"], 'noise.ratios=(0.0, 1.5): each value must be [0, 1]'),
    (['--config.data.source=raw', '--config.data.name=cifar10', '--config.data.data_dir=/nonexistent'],
     "cifar10 raw files not found in data_dir='/nonexistent'"),
    (['--config.train.schedule=linear'], "train.schedule='linear' is not one of"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, flags, message):
    workdir = tmp_path / 'run'
    result = cli(write_config(tmp_path), workdir, *flags)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith('memjax: error: ') and message in lines[-1], result.stderr
    assert 'Traceback' not in result.stderr
    assert not workdir.exists()


def test_validation_split_larger_than_data(tmp_path):
    write_mnist_like(str(tmp_path / 'mnist'), n_train=40, n_test=10)
    result = cli(write_config(tmp_path), tmp_path / 'run', '--config.data.source=raw',
                 '--config.data.name=mnist', f'--config.data.data_dir={tmp_path / "mnist"}',
                 '--config.data.val_size=50')
    assert result.returncode == 2 and 'data.val_size=50 is not smaller than the 40-example' in result.stderr


def test_workdir_of_another_config_is_refused(tmp_path):
    config = write_config(tmp_path, **{'train.epochs': 1})
    assert cli(config, tmp_path / 'run').returncode == 0
    before = {p: os.path.getmtime(os.path.join(tmp_path / 'run', p)) for p in os.listdir(tmp_path / 'run')}
    result = cli(config, tmp_path / 'run', '--config.train.epochs=2')
    assert result.returncode == 2 and 'holds a run of another config (train.epochs: 1 -> 2)' in result.stderr
    after = {p: os.path.getmtime(os.path.join(tmp_path / 'run', p)) for p in os.listdir(tmp_path / 'run')}
    assert before == after


def test_kill_9_then_the_same_command_resumes_to_the_uninterrupted_result(tmp_path):
    overrides = {'train.epochs': 4, 'checkpoint.async_save': True, 'train.strategy': 'auto'}
    config = write_config(tmp_path, **overrides)
    killed = cli(config, tmp_path / 'resumed', env={KILL_AFTER_EPOCH_ENV: '2'})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert open_run(str(tmp_path / 'resumed')).directory.status()['epoch'] == 2
    # On two devices auto's rule would shard; the resumed run keeps the strategy it began with.
    resumed = cli(config, tmp_path / 'resumed', env={'XLA_FLAGS': xla_flags(2)})
    assert resumed.returncode == 0, resumed.stderr
    assert 'resuming' in resumed.stdout and 'after epoch 2' in resumed.stdout
    assert 'strategy auto -> loop' in resumed.stdout, resumed.stdout
    train(tiny_config(**overrides), str(tmp_path / 'straight'), log=quiet)
    assert_trees(final_variables(str(tmp_path / 'resumed')), final_variables(str(tmp_path / 'straight')))
    resumed_rows = open_run(str(tmp_path / 'resumed')).directory.read_metrics()
    straight_rows = open_run(str(tmp_path / 'straight')).directory.read_metrics()
    assert resumed_rows == straight_rows


def test_replicas_sharded_over_8_devices_equal_the_single_device_run(tmp_path):
    config = write_config(tmp_path, **{'train.epochs': 2, 'noise.ratios': (0.0, 0.25, 0.5, 0.75),
                                       'seeds': (0, 1)})
    env = {'XLA_FLAGS': xla_flags(8)}
    sharded = cli(config, tmp_path / 'sharded', '--config.train.strategy=shard', env=env)
    assert sharded.returncode == 0, sharded.stderr
    assert 'strategy shard' in sharded.stdout
    single = cli(config, tmp_path / 'single', '--config.train.strategy=vmap')
    assert single.returncode == 0, single.stderr
    assert_trees(final_variables(str(tmp_path / 'sharded')), final_variables(str(tmp_path / 'single')),
                 exact=False, rtol=1e-4, atol=1e-5)
