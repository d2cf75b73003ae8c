"""The notebooks' memjax helpers: config variants and overrides, data download, work directory, readers."""

from __future__ import annotations

import json
import os

import pytest

from memjax import notebook
from memjax.errors import ConfigError
from memjax.experiment import check
from memjax.report import notebook as readers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE_CONFIGS = ('default', 'cifar10_r18', 'cifar10_r9', 'cifar10_vgg11_p4', 'cifar10_r18_p5')


@pytest.mark.parametrize('name', SMOKE_CONFIGS)
def test_smoke_variant_is_tiny_synthetic_and_keeps_the_analyses(name):
    full = notebook.load_config(f'configs/{name}.py')
    smoke = notebook.load_config(f'configs/{name}.py:smoke')
    assert smoke.data.source == 'synthetic' and smoke.model.name == 'cnn' and smoke.model.width == 4
    assert smoke.data.num_train == 128 and smoke.train.epochs == 2 and len(smoke.seeds) == 1
    assert tuple(smoke.analyses) == tuple(full.analyses) and full.analyses
    assert set(smoke.noise.ratios) <= set(full.noise.ratios)
    check(smoke)


def test_load_config_by_name_variant_argument_and_overrides():
    config = notebook.load_config('cifar10_r18', 'smoke', {'train.epochs': 3, 'noise.ratios': [0.0, 0.2]})
    assert config.train.epochs == 3 and tuple(config.noise.ratios) == (0.0, 0.2)
    p4 = notebook.load_config(os.path.join(ROOT, 'configs', 'cifar10_vgg11_p4.py'), 'noise_levels,smoke')
    assert p4.data.source == 'synthetic' and tuple(p4.noise.ratios) == (0.0, 1.0)
    assert len(notebook.load_config('configs/cifar10_vgg11_p4.py:noise_levels').noise.ratios) == 6
    with pytest.raises(ConfigError, match="unknown config key 'train.epoch'"):
        notebook.load_config('configs/default.py', 'smoke', {'train.epoch': 3})
    with pytest.raises(ConfigError, match='bad value for train.epochs'):
        notebook.load_config('configs/default.py', 'smoke', {'train.epochs': 'three'})
    with pytest.raises(ConfigError, match="unknown config variant 'tiny'"):
        notebook.load_config('configs/default.py:tiny')
    with pytest.raises(ConfigError, match='not found'):
        notebook.load_config('configs/nope.py')


def test_workdir_prefers_a_mounted_drive(tmp_path):
    drive = tmp_path / 'MyDrive'
    assert readers.default_workdir('r18', str(drive), str(tmp_path / 'runs')) == str(tmp_path / 'runs' / 'r18')
    drive.mkdir()
    assert readers.default_workdir('r18', str(drive)) == str(drive / 'memjax_runs' / 'r18')
    assert notebook.workdir_for('configs/cifar10_r9.py', 'smoke', '/x/run') == '/x/run'
    assert notebook.workdir_for('configs/cifar10_r9.py', 'smoke').endswith('cifar10_r9_smoke')
    assert 'not on Colab' in notebook.mount_drive()
    # A variant written into the path gets its own directory, never the full config's.
    assert notebook.workdir_for('configs/cifar10_r18.py:smoke').endswith('cifar10_r18_smoke')
    assert notebook.workdir_for('configs/cifar10_r18.py').endswith('cifar10_r18')


@pytest.mark.parametrize('call,message', [
    (lambda: notebook.workdir_for(None), 'config=None must be str'),
    (lambda: notebook.workdir_for('configs/default.py', workdir=3), 'workdir=3 must be str or None'),
    (lambda: notebook.load_config(['configs/default.py']), r"config=\['configs/default.py'\] must be str"),
    (lambda: notebook.load_config('configs/default.py', 7), 'variant=7 must be str or None'),
    (lambda: notebook.load_config('configs/default.py', None, ['train.epochs=3']), 'overrides=.* must be dict'),
    (lambda: notebook.load_config('configs/default.py', 'nope'), "unknown config variant 'nope'; known: smoke"),
    (lambda: notebook.run_experiment(42), 'config=42 must be a config path or a ConfigDict'),
])
def test_wrong_arguments_are_one_line_config_errors(call, message):
    with pytest.raises(ConfigError, match=message):
        call()


def test_download_raw_fetches_once_and_prepare_data_points_the_config_at_it(tmp_path):
    served = tmp_path / 'served'
    served.mkdir()
    (served / 'cifar-10-python.tar.gz').write_bytes(b'x' * 1000)
    config = notebook.load_config('configs/cifar10_r18.py')
    data_dir = str(tmp_path / 'data')
    report = notebook.prepare_data(config, 'raw', data_dir, base_url=served.as_uri())
    assert 'downloaded cifar-10-python.tar.gz' in report and config.data.source == 'raw'
    assert config.data.data_dir == data_dir and (tmp_path / 'data' / 'cifar-10-python.tar.gz').read_bytes() == b'x' * 1000
    assert 'nothing downloaded' in notebook.prepare_data(config, 'raw', data_dir, base_url='file:///nonexistent')
    with pytest.raises(OSError):
        notebook.prepare_data(config, 'raw', str(tmp_path / 'other'), base_url='file:///nonexistent')
    assert not os.listdir(tmp_path / 'other')  # no partial file left
    assert 'synthetic' in notebook.prepare_data(notebook.load_config('configs/default.py:smoke'), None, None)
    assert 'tfds cifar10' in notebook.prepare_data(notebook.load_config('configs/cifar10_r9.py'), 'tfds', '/tf')
    with pytest.raises(ConfigError, match='no download for data set'):
        notebook.prepare_data(notebook.load_config('configs/svhn_cnn.py'), 'raw', data_dir)


def test_readers_of_a_run_directory(tmp_path):
    (tmp_path / 'figures').mkdir()
    (tmp_path / 'figures' / 'b_fig.png').write_bytes(b'')
    (tmp_path / 'figures' / 'a_fig.png').write_bytes(b'')
    (tmp_path / 'results' / 'stitching').mkdir(parents=True)
    rows = '\n'.join(f'{i},{i / 3},name{i}' for i in range(30))
    (tmp_path / 'results' / 'stitching' / 'table.csv').write_text('k,value,label\n' + rows + '\n')
    with pytest.raises(FileNotFoundError, match='has not finished training'):
        readers.summary_table(str(tmp_path))
    (tmp_path / 'summary.txt').write_text('the table\n')
    (tmp_path / 'metrics.jsonl').write_text('\n'.join(json.dumps(
        {'epoch': e, 'replica': 0, 'noise_ratio': 0.0, 'train_accuracy': 0.5, 'memorization_accuracy': None,
         'test_accuracy': 0.25}) for e in range(5)) + '\n')
    assert readers.summary_table(str(tmp_path)) == 'the table\n'
    assert [os.path.basename(p) for p in readers.run_figures(str(tmp_path))] == ['a_fig.png', 'b_fig.png']
    assert [os.path.basename(p) for p in readers.run_figures(str(tmp_path), ('b_fig',))] == ['b_fig.png']
    tables = readers.result_tables(str(tmp_path))
    assert list(tables) == [os.path.join('stitching', 'table.csv')]
    text = readers.csv_text(tables[os.path.join('stitching', 'table.csv')], max_rows=3)
    assert '0.333' in text and 'name2' in text and 'name3' not in text and '27 more rows' in text
    metrics = readers.metrics_text(str(tmp_path), last_epochs=2)
    assert len(metrics.splitlines()) == 4 and '0.250' in metrics
    assert readers.device_summary().startswith('backend: cpu, 1 device(s)')
