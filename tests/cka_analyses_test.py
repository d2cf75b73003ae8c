"""The CKA analyses on a tiny trained run: files, figures, and the identities they must satisfy."""

import importlib.util
import os

import numpy as np
import pytest

from helpers import tiny_config
from memjax.analysis.runner import run_analyses
from memjax.analysis.similarity import representations
from memjax.analysis.similarity.representations import CkaSettings
from memjax.experiment import check
from memjax.errors import ConfigError
from memjax.train.loop import train

quiet = lambda _: None


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp('cka') / 'run')
    config = tiny_config(**{'seeds': (0, 1)})
    train(config, workdir, log=quiet)
    return workdir, config


def analysed(trained, **cka):
    workdir, config = trained
    config = tiny_config(**{'seeds': (0, 1), 'analyses': ('convergence', 'noisy_vs_clean', 'cka_matrix')})
    config.analysis.cka.num_examples = 32
    for key, value in cka.items():
        config.analysis.cka[key] = value
    messages = []
    run_analyses(config, workdir, log=messages.append)
    return workdir, messages


def test_convergence_and_noisy_vs_clean(trained):
    workdir, messages = analysed(trained)
    conv = np.load(os.path.join(workdir, 'results/convergence/cka.npz'))
    nvc = np.load(os.path.join(workdir, 'results/noisy_vs_clean/cka.npz'))
    assert conv['cka'].shape == (4, 7, 4)  # replicas (r x seed), CNN stages, epochs 0..3
    assert conv['epochs'].tolist() == [0, 1, 2, 3] and conv['stages'].tolist()[0] == 'conv1'
    np.testing.assert_allclose(conv['cka'][:, :, -1], 1.0, atol=1e-5)  # final vs itself
    assert np.all(conv['cka'] >= -1e-6) and np.all(conv['cka'] <= 1 + 1e-6)
    # Clean replicas (r = 0: indices 0, 1) compared with the final clean model is their convergence.
    np.testing.assert_allclose(nvc['cka'][:2], conv['cka'][:2], atol=1e-6)
    # Noisy replica at the final epoch vs the final clean model of its seed is not the identity.
    assert np.all(nvc['cka'][2:, -1, -1] < 0.9999)
    assert nvc['noise_ratios'].tolist() == [0.0, 0.0, 0.5, 0.5] and nvc['seeds'].tolist() == [0, 1, 0, 1]
    lines = open(os.path.join(workdir, 'results/convergence/cka.csv')).read().splitlines()
    assert lines[0] == 'replica,noise_ratio,seed,epoch,granularity,stage,cka,cka_debiased'
    assert len(lines) == 1 + 4 * 7 * 4
    assert lines[1].split(',')[4:6] == ['stage', 'conv1'] and str(conv['granularity']) == 'stage'
    # Full batch (the default): the debiased value of the same Grams beside the biased one.
    assert str(conv['estimator']) == 'linear' and int(conv['minibatch_size']) == 0
    assert conv['cka_debiased'].shape == conv['cka'].shape
    np.testing.assert_allclose(conv['cka_debiased'][:, :, -1], 1.0, atol=1e-5)
    assert np.max(np.abs(conv['cka_debiased'] - conv['cka'])) > 1e-3
    assert any('linear CKA, full batch of 32' in m for m in messages)
    for name in ('convergence_by_stage', 'convergence_over_epochs', 'noisy_vs_clean_by_stage',
                 'noisy_vs_clean_over_epochs'):
        assert os.path.getsize(os.path.join(workdir, 'figures', f'{name}.png')) > 10_000


def test_cka_matrix_of_a_model_with_itself_has_a_unit_diagonal(trained):
    workdir, _ = analysed(trained)
    matrix = np.load(os.path.join(workdir, 'results/cka_matrix/r0_s0_e3__r0_s0_e3.npz'))['cka']
    assert matrix.shape == (7, 7)
    np.testing.assert_allclose(np.diag(matrix), 1.0, atol=1e-5)
    np.testing.assert_allclose(matrix, matrix.T, atol=1e-5)
    other = np.load(os.path.join(workdir, 'results/cka_matrix/r0_s1_e3__r0.5_s1_e3.npz'))['cka']
    assert not np.allclose(np.diag(other), 1.0)
    assert os.path.exists(os.path.join(workdir, 'figures/cka_matrix_r0_s0_e3__r0.5_s0_e3.png'))


@pytest.mark.parametrize('settings', [dict(estimator='debiased', minibatch_size=16),
                                      dict(estimator='rbf', pooling='mean', stages=('conv2', 'fc1'))])
def test_other_estimators_run_from_the_config(trained, settings):
    workdir, messages = analysed(trained, **settings)
    conv = np.load(os.path.join(workdir, 'results/convergence/cka.npz'))
    np.testing.assert_allclose(conv['cka'][:, :, -1], 1.0, atol=1e-4)
    if 'stages' in settings:
        assert conv['stages'].tolist() == ['conv2', 'fc1']
    assert any('minibatches of 16' in m for m in messages) == ('minibatch_size' in settings)
    # The debiased column exists only where full-batch Grams are formed.
    assert ('cka_debiased' in conv.files) == ('minibatch_size' not in settings)


def test_bad_analysis_settings_are_clear_errors(trained):
    with pytest.raises(ConfigError, match="unknown analysis 'cca'"):
        check(tiny_config(**{'analyses': ('cca',)}))
    with pytest.raises(ConfigError, match="analysis.cka.stages names stage 'layer9', which cnn lacks"):
        check(tiny_config(**{'analyses': ('convergence',), 'analysis.cka.stages': ('layer9',)}))
    with pytest.raises(ConfigError, match="names stage 'layer9'"):
        analysed(trained, stages=('layer9',))
    with pytest.raises(ConfigError, match='multiple of'):
        analysed(trained, minibatch_size=10)


def test_noisy_vs_clean_needs_a_clean_replica(tmp_path):
    workdir = str(tmp_path / 'run')
    config = tiny_config(**{'noise.ratios': (0.5,), 'train.epochs': 1, 'analyses': ('noisy_vs_clean',)})
    train(config, workdir, log=quiet)
    with pytest.raises(ConfigError, match='add 0.0 to noise.ratios'):
        run_analyses(config, workdir, log=quiet)


def load_config(name):
    path = os.path.join(os.path.dirname(__file__), '..', 'configs', f'{name}.py')
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


@pytest.mark.parametrize('name', ['cifar10_r18', 'cifar10_r34', 'cifar100_r34', 'cifar100_r50', 'svhn_cnn'])
def test_the_paper_configs_compute_p1s_estimator(name):
    """P1 section 2: biased linear CKA, HSIC = tr(KHLH)/(N-1)^2, full batch on the 10,000 test images;
    not minibatch debiased CKA, which gives about 0 where the biased one gives D/(N+D)."""
    settings = CkaSettings.from_config(load_config(name).analysis.cka, 'cka')
    assert settings.estimator == 'linear' and not settings.debiased
    assert settings.minibatch_size is None and settings.full_batch
    assert (settings.split, settings.num_examples) == ('test', 10000)
    assert settings.describe() == 'linear CKA, full batch of 10000'


def test_grams_the_device_cannot_hold_are_refused_before_any_is_formed(trained, monkeypatch):
    formed = []
    monkeypatch.setattr(representations, 'device_memory', lambda: 10_000)
    monkeypatch.setattr(representations, 'blockwise_grams', lambda *a, **k: formed.append(1))
    with pytest.raises(ConfigError, match=r"analysis.cka: linear CKA, full batch of 32 needs 3 models' Grams of 7 "
                                          r"units x 32 x 32 examples .* more than the device's .*lower "
                                          r"analysis.cka.num_examples=32"):
        analysed(trained)
    assert not formed
