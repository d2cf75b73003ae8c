import jax.numpy as jnp
import numpy as np
import pytest

from memjax.analysis.similarity import cka

rng = np.random.default_rng(0)


def orthogonal(d, seed=0):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q


def correlated(n=120, dx=30, dy=20):
    x = rng.normal(size=(n, dx))
    y = x[:, :dy] @ rng.normal(size=(dy, dy)) + 0.5 * rng.normal(size=(n, dy))
    return x.astype(np.float32), y.astype(np.float32)


@pytest.mark.parametrize('estimator', ['linear', 'debiased', 'rbf'])
def test_invariant_to_orthogonal_transforms_and_isotropic_scaling(estimator):
    x, y = correlated()
    f = {'linear': lambda a, b: cka.linear_cka(a, b),
         'debiased': lambda a, b: cka.linear_cka(a, b, debiased=True),
         'rbf': lambda a, b: cka.rbf_cka(a, b, 0.8)}[estimator]
    base = float(f(x, y))
    assert 0.05 < base < 1.0
    transformed = float(f(3.7 * x @ orthogonal(30), 0.01 * y @ orthogonal(20, seed=1)))
    assert transformed == pytest.approx(base, abs=2e-4)


def test_self_similarity_is_one():
    x, _ = correlated()
    assert float(cka.linear_cka(x, x)) == pytest.approx(1.0, abs=1e-5)
    assert float(cka.linear_cka(x, x, debiased=True)) == pytest.approx(1.0, abs=1e-5)
    assert float(cka.rbf_cka(x, x)) == pytest.approx(1.0, abs=1e-5)


def test_gram_and_feature_forms_agree():
    for dx, dy in [(5, 7), (300, 200), (40, 400)]:
        x, y = rng.normal(size=(64, dx)).astype(np.float32), rng.normal(size=(64, dy)).astype(np.float32)
        y[:, :5] += x[:, :5]
        gram = float(cka.gram_space_linear_cka(x, y))
        feature = float(cka.feature_space_linear_cka(x, y))
        assert gram == pytest.approx(feature, rel=1e-4)
        assert float(cka.linear_cka(x, y)) == pytest.approx(gram, rel=1e-4)
        assert float(cka.cka_from_grams(x @ x.T, y @ y.T)) == pytest.approx(gram, rel=1e-4)


def test_u_centred_inner_product_is_the_unbiased_hsic_of_song_et_al():
    x, y = correlated(n=30)
    k, l = (x @ x.T).astype(np.float64), (y @ y.T).astype(np.float64)
    n = k.shape[0]
    kt, lt = k - np.diag(np.diag(k)), l - np.diag(np.diag(l))
    ones = np.ones(n)
    song = (np.trace(kt @ lt) + ones @ kt @ ones * (ones @ lt @ ones) / ((n - 1) * (n - 2))
            - 2.0 / (n - 2) * ones @ kt @ lt @ ones) / (n * (n - 3))
    ours = float(jnp.sum(cka.u_center_gram(jnp.asarray(k, jnp.float32))
                         * cka.u_center_gram(jnp.asarray(l, jnp.float32)))) * cka.hsic_scale(n, True)
    assert ours == pytest.approx(song, rel=1e-3)


def test_debiased_is_near_zero_for_independent_features_while_biased_is_near_d_over_n_plus_d():
    n, d = 200, 100
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = rng.normal(size=(n, d)).astype(np.float32)
    biased = float(cka.linear_cka(x, y))
    debiased = float(cka.linear_cka(x, y, debiased=True))
    assert biased == pytest.approx(d / (n + d), abs=0.05)
    assert abs(debiased) < 0.03


def test_minibatch_agrees_with_full_debiased_and_does_not_drift_with_batch_size():
    n = 1200
    x = rng.normal(size=(n, 40)).astype(np.float32)
    y = (x[:, :20] @ rng.normal(size=(20, 30)) + 2.0 * rng.normal(size=(n, 30))).astype(np.float32)
    full = float(cka.linear_cka(x, y, debiased=True))
    results = []
    for batch in (100, 200, 400):
        acc = cka.MinibatchCKA(debiased=True)
        for i in range(0, n, batch):
            acc.update(cka.stacked_grams((x[i:i + batch],), debiased=True),
                       cka.stacked_grams((y[i:i + batch],), debiased=True))
        results.append(float(acc.result()[0, 0]))
    assert max(abs(r - full) for r in results) < 0.03
    assert max(results) - min(results) < 0.03
    # The biased estimator per batch does drift upward as batches shrink (why debiased is the default).
    biased = []
    for batch in (50, 600):
        acc = cka.MinibatchCKA(debiased=False)
        for i in range(0, n, batch):
            acc.update(cka.stacked_grams((x[i:i + batch],)), cka.stacked_grams((y[i:i + batch],)))
        biased.append(float(acc.result()[0, 0]))
    assert biased[0] > biased[1] + 0.02


def test_all_pairs_call_equals_pair_by_pair():
    r, n = 3, 48
    layers_a = (rng.normal(size=(r, n, 4, 4, 3)), rng.normal(size=(r, n, 10)), rng.normal(size=(r, n, 7)))
    layers_b = (layers_a[0] + 0.3 * rng.normal(size=(r, n, 4, 4, 3)), rng.normal(size=(r, n, 5)))
    layers_a = tuple(jnp.asarray(a, jnp.float32) for a in layers_a)
    layers_b = tuple(jnp.asarray(b, jnp.float32) for b in layers_b)
    for debiased in (False, True):
        matrix = cka.cka_all_pairs(layers_a, layers_b, debiased=debiased)
        assert matrix.shape == (r, 3, 2)
        for i in range(r):
            for a in range(3):
                for b in range(2):
                    single = cka.linear_cka(layers_a[a][i], layers_b[b][i], debiased=debiased)
                    assert float(matrix[i, a, b]) == pytest.approx(float(single), abs=1e-5)


def test_constant_features_give_zero_not_nan():
    x = np.ones((20, 5), np.float32)
    y = rng.normal(size=(20, 3)).astype(np.float32)
    zeros = np.zeros((20, 5), np.float32)
    for value in (cka.linear_cka(x, y), cka.linear_cka(x, y, debiased=True), cka.rbf_cka(x, y),
                  cka.gram_space_linear_cka(x, x), cka.feature_space_linear_cka(zeros, y),
                  cka.cka_all_pairs((jnp.asarray(x)[None],), (jnp.asarray(y)[None],))[0, 0, 0]):
        assert float(value) == 0.0
