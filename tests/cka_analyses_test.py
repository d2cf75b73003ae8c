"""The CKA analyses on a tiny trained run: files, figures, and the identities they must satisfy."""

import os

import numpy as np
import pytest

from helpers import tiny_config
from memjax.analysis.runner import run_analyses
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
    assert lines[0] == 'replica,noise_ratio,seed,epoch,granularity,stage,cka' and len(lines) == 1 + 4 * 7 * 4
    assert lines[1].split(',')[4:6] == ['stage', 'conv1'] and str(conv['granularity']) == 'stage'
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
