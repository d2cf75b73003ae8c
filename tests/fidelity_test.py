"""P1/P2 fidelity: float32 analyses, the reference RBF bandwidth, the refusal of biased minibatch CKA."""

import json
import os

import numpy as np
import pytest

from helpers import tiny_config
from memjax.analysis.runner import run_analyses
from memjax.analysis.similarity import cka
from memjax.errors import ConfigError
from memjax.experiment import check
from memjax.run import open_run
from memjax.train.loop import train

quiet = lambda _: None


def reference_gram_rbf(x, threshold):
    """Kornblith et al.'s `gram_rbf` (google-research/representation_similarity), transcribed."""
    dot_products = x.dot(x.T)
    sq_norms = np.diag(dot_products)
    sq_distances = -2 * dot_products + sq_norms[:, None] + sq_norms[None, :]
    sq_median_distance = np.median(sq_distances)
    return np.exp(-sq_distances / (2 * threshold ** 2 * sq_median_distance))


def reference_cka(gram_x, gram_y):
    """Biased CKA of two Grams: HSIC with H = I - 11^T/n."""
    n = gram_x.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    hsic = lambda k, l: np.trace(k @ h @ l @ h)
    return hsic(gram_x, gram_y) / np.sqrt(hsic(gram_x, gram_x) * hsic(gram_y, gram_y))


@pytest.mark.parametrize('n', [24, 25])  # even and odd count of matrix entries: np.median's two cases
def test_rbf_gram_and_cka_match_kornblith_reference_code(n):
    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, 6))
    y = x[:, :3] @ rng.normal(size=(3, 5)) + 0.3 * rng.normal(size=(n, 5))
    for threshold in (0.5, 1.0):
        ours = np.asarray(cka.rbf_gram(x.astype(np.float32), threshold))
        np.testing.assert_allclose(ours, reference_gram_rbf(x, threshold), atol=2e-5)
        expected = reference_cka(reference_gram_rbf(x, threshold), reference_gram_rbf(y, threshold))
        got = float(cka.rbf_cka(x.astype(np.float32), y.astype(np.float32), threshold))
        assert got == pytest.approx(expected, abs=1e-4)


def test_biased_estimator_with_minibatches_is_refused_at_start_up():
    for estimator in ('linear', 'rbf'):
        config = tiny_config(**{'analyses': ('convergence',), 'analysis.cka.estimator': estimator,
                                'analysis.cka.num_examples': 32, 'analysis.cka.minibatch_size': 16})
        with pytest.raises(ConfigError, match=f"estimator='{estimator}' is biased .* use a \\*debiased"):
            check(config)
    for estimator in ('debiased', 'rbf_debiased'):
        check(tiny_config(**{'analyses': ('convergence',), 'analysis.cka.estimator': estimator,
                             'analysis.cka.num_examples': 32, 'analysis.cka.minibatch_size': 16}))
    check(tiny_config(**{'analyses': ('convergence',), 'analysis.cka.num_examples': 32,
                         'analysis.cka.minibatch_size': 32}))  # one batch of all: not a minibatch


def test_analyses_run_in_float32_after_bfloat16_training(tmp_path):
    workdir = str(tmp_path / 'run')
    config = tiny_config(**{'model.dtype': 'bfloat16', 'train.epochs': 1, 'analyses': ('cka_matrix',),
                            'analysis.cka.num_examples': 32})
    train(config, workdir, log=quiet)
    run = open_run(workdir)
    assert run.config.model.dtype == 'bfloat16' and run.model.dtype == np.float32
    # The analysis features equal those of a float32 model, not the bfloat16 one it trained with.
    from memjax.models import build_model
    from memjax.data.pipeline import normalize
    variables = run.replica_variables(1, 0)
    images = normalize(run.split('test')[0][:8], run.dataset.mean, run.dataset.std, np.float32)
    f32 = build_model('cnn', 4, 4, 'float32').apply(variables, images, capture=('conv1',)).features['conv1']
    ours = run.model.apply(variables, images, capture=('conv1',)).features['conv1']
    assert ours.dtype == np.float32
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(f32))
    run_analyses(config, workdir, log=quiet)
    record = json.load(open(os.path.join(workdir, 'results', 'cka_matrix', 'complete.json')))
    assert record['analysis_dtype'] == 'float32' and record['training_dtype'] == 'bfloat16'
