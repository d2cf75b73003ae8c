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


# ---- Full batch, blockwise (P1's estimator on the whole test split) ----

def numpy_cka(x: np.ndarray, y: np.ndarray, debiased: bool = False) -> float:
    """CKA in float64 straight from the formulas: biased HSIC = tr(K H L H) / (N-1)^2 (Kornblith et al.,
    P1 section 2); unbiased HSIC of Song et al. 2012 (Eq. 5 there) for the debiased estimator."""
    x, y = x.reshape(len(x), -1).astype(np.float64), y.reshape(len(y), -1).astype(np.float64)
    n = len(x)
    k, l = x @ x.T, y @ y.T

    def hsic(a, b):
        if not debiased:
            h = np.eye(n) - np.ones((n, n)) / n
            return np.trace(a @ h @ b @ h) / (n - 1) ** 2
        a, b = a - np.diag(np.diag(a)), b - np.diag(np.diag(b))
        ones = np.ones(n)
        return (np.trace(a @ b) + ones @ a @ ones * (ones @ b @ ones) / ((n - 1) * (n - 2))
                - 2.0 / (n - 2) * ones @ a @ b @ ones) / (n * (n - 3))
    return hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))


def full_batch(units, block, **kwargs):
    """(biased [L, L], debiased [L, L]) full-batch CKA of units (tuple of [n, D_l]) from blocks of `block`."""
    n = units[0].shape[0]
    grams = cka.blockwise_grams(lambda a, b: tuple(u[a:b] for u in units), n, block, **kwargs)
    assert grams.shape == (len(units), n, n)
    return tuple(np.asarray(v) for v in cka.full_batch_cka(grams, grams))


def wide_units(n=61):
    """Post-ReLU features with a large mean (as conv maps), a related narrow unit, and independent
    features wider than n, where the biased and debiased estimators disagree most."""
    r = np.random.default_rng(3)
    x = np.maximum(r.normal(size=(n, 40)) + 0.7, 0.0)
    y = np.maximum(x[:, :10] @ r.normal(size=(10, 25)) + r.normal(size=(n, 25)), 0.0)
    wide_a, wide_b = r.normal(size=(n, 3, 4, 50)), r.normal(size=(n, 900))
    return tuple(u.reshape(n, -1).astype(np.float32) for u in (x, y, wide_a, wide_b))


def test_blockwise_full_batch_equals_one_shot_and_the_numpy_formula():
    units = wide_units()
    one_shot, _ = full_batch(units, block=61)  # one block: the Gram of all examples at once
    for block in (16, 7):  # uneven last blocks
        blockwise, _ = full_batch(units, block=block)
        np.testing.assert_allclose(blockwise, one_shot, atol=2e-6)
    for i, j in [(0, 1), (2, 3), (0, 2), (1, 3)]:
        assert one_shot[i, j] == pytest.approx(numpy_cka(units[i], units[j]), abs=2e-5)
        assert one_shot[i, j] == pytest.approx(float(cka.linear_cka(units[i], units[j])), abs=2e-5)
    np.testing.assert_allclose(np.diag(one_shot), 1.0, atol=1e-5)
    np.testing.assert_allclose(one_shot, one_shot.T, atol=1e-6)
    # Independent 600- and 900-dim features on 61 examples: biased CKA is large (about D/(N+D)).
    assert one_shot[2, 3] > 0.8


def test_the_debiased_column_from_the_same_grams_is_the_unbiased_hsic_cka():
    units = wide_units()
    biased, debiased = full_batch(units, block=13)
    for i, j in [(0, 1), (2, 3), (0, 3)]:
        assert debiased[i, j] == pytest.approx(numpy_cka(units[i], units[j], debiased=True), abs=5e-5)
        assert debiased[i, j] == pytest.approx(float(cka.linear_cka(units[i], units[j], debiased=True)), abs=5e-5)
    assert abs(debiased[2, 3]) < 0.1 < 0.8 < biased[2, 3]  # independent: debiased near 0, biased not
    np.testing.assert_allclose(np.diag(debiased), 1.0, atol=1e-5)
    # Unit l against unit l only (what the over-training analyses keep) is the diagonal of all pairs.
    grams = cka.blockwise_grams(lambda a, b: tuple(u[a:b] for u in units), 61, 13)
    shifted = jnp.roll(grams, 1, axis=0)
    pairs, diagonal = cka.full_batch_cka(grams, shifted), cka.full_batch_cka(grams, shifted, diagonal=True)
    for all_pairs, same_unit in zip(pairs, diagonal):
        np.testing.assert_allclose(np.asarray(same_unit), np.diagonal(np.asarray(all_pairs)), atol=1e-5)


def test_blockwise_rbf_equals_the_one_shot_rbf_estimators():
    x, y = correlated(n=50)
    biased, debiased = full_batch((x, y), block=12, kernel='rbf', bandwidth=0.8)
    assert biased[0, 1] == pytest.approx(float(cka.rbf_cka(x, y, 0.8)), abs=2e-5)
    assert debiased[0, 1] == pytest.approx(float(cka.rbf_cka(x, y, 0.8, debiased=True)), abs=2e-5)


def test_full_batch_constant_units_give_zero_not_nan():
    units = (np.full((20, 5), 3.0, np.float32), rng.normal(size=(20, 3)).astype(np.float32))
    for kernel in ('linear', 'rbf'):
        biased, debiased = full_batch(units, block=6, kernel=kernel)
        assert biased[0, 1] == 0.0 and debiased[0, 1] == 0.0 and biased[1, 1] == pytest.approx(1.0, abs=1e-5)
