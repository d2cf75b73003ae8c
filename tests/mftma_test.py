"""MFTMA estimator (P5): batched QP vs scipy, theory limits, invariances, padding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
import scipy.optimize

from memjax.analysis.geometry import mftma
from memjax.analysis.geometry.mftma_solver import solve_dual_qp


def scipy_qp(t, s, kappa):
    """Independent solve of min ||v - t||^2 s.t. s v + kappa <= 0 for points whose
    last coordinate is 1: the dual is the NNLS min_{a>=0} ||s^T a - t - kappa e_last||
    (Lawson-Hanson, scipy.optimize.nnls), and v = t - s^T a."""
    alpha, _ = scipy.optimize.nnls(s.T, t + kappa * np.eye(len(t))[-1], maxiter=10000)
    v = t - s.T @ alpha
    assert np.all(s @ v + kappa <= 1e-9)
    return v


def random_problems(sizes, d, n_t, seed):
    """Padded MFTMA-like problems: points [P, M, d+1] (last coordinate 1), t [P, T, d+1]."""
    rng = np.random.default_rng(seed)
    pts = np.zeros((len(sizes), max(sizes), d + 1))
    for i, m in enumerate(sizes):
        pts[i, :m, :d] = rng.normal(size=(m, d)) * rng.uniform(0.3, 2.0)
        pts[i, :m, d] = 1.0
    mask = np.arange(max(sizes))[None] < np.array(sizes)[:, None]
    return pts, mask, rng.normal(size=(len(sizes), n_t, d + 1))


def batched_v(pts, mask, t, kappa, dtype, tol):
    gram = jnp.asarray(np.einsum('pmd,pnd->pmn', pts, pts), dtype)
    b = jnp.asarray(np.einsum('ptd,pmd->ptm', t, pts) + kappa, dtype)
    alpha, info = solve_dual_qp(gram, b, jnp.asarray(mask), tol=tol, max_iters=20000)
    return t - np.einsum('ptm,pmd->ptd', np.asarray(alpha, np.float64), pts), info


@pytest.mark.parametrize('kappa', [0.0, 0.7])
def test_batched_qp_matches_scipy_including_padding(kappa):
    sizes = [3, 9, 6]
    pts, mask, t = random_problems(sizes, d=7, n_t=6, seed=1)
    with jax.enable_x64(True):
        v64, info = batched_v(pts, mask, t, kappa, jnp.float64, 1e-10)
    assert bool(info['converged'])
    v32, info32 = batched_v(pts, mask, t, kappa, jnp.float32, 1e-6)
    for i, m in enumerate(sizes):
        for j in range(t.shape[1]):
            ref = scipy_qp(t[i, j], pts[i, :m], kappa)
            np.testing.assert_allclose(v64[i, j], ref, atol=1e-6)
            np.testing.assert_allclose(v32[i, j], ref, atol=1e-4)
    # Padding: the same manifold solved alone gives the same answer.
    with jax.enable_x64(True):
        alone, _ = batched_v(pts[:1, :3], mask[:1, :3], t[:1], kappa, jnp.float64, 1e-10)
    np.testing.assert_allclose(alone[0], v64[0], atol=1e-8)


def reference_pipeline(manifolds, t_vecs, kappa, seed=0, normalise=True):
    """Plain numpy/scipy transcription of the reference definitions, one
    manifold and one t at a time (SLSQP QPs), sharing only the center-structure
    fit with memjax."""
    x_all = np.concatenate(manifolds)
    origin = x_all.mean(0)
    centers = np.stack([m.mean(0) for m in manifolds])
    basis = mftma.center_low_rank_structure(centers, 10, np.random.default_rng(seed))['basis']
    caps, rads, dims = [], [], []
    for x, t_vec in zip(manifolds, t_vecs):
        xr = x - origin
        xr = xr - (xr @ basis) @ basis.T
        c = xr.mean(0)
        s_r = (xr - c) / (np.linalg.norm(c) if normalise else 1.0)
        r = scipy.linalg.qr(s_r.T, mode='r')[0][:min(s_r.shape)]
        r = r * np.where(np.diag(r) < 0, -1.0, 1.0)[:, None]
        s = np.concatenate([r, np.ones((1, len(x)))]).T  # [M, D+1]
        dd = s.shape[1] - 1
        anchors = []
        for t in t_vec:
            s0 = s[np.argmax(s[:, :dd] @ t[:dd])]
            if t @ s0 + kappa < 0:
                anchors.append(s0)
                continue
            v = scipy_qp(t, s, kappa)
            anchors.append((t - v) / (t - v)[-1])  # S alpha / sum(alpha): s[:, -1] == 1
        a = np.array(anchors)
        caps.append(1 / np.mean(np.maximum(np.sum(t_vec * a, 1) + kappa, 0) ** 2 / np.sum(a * a, 1)))
        rads.append(np.sqrt(np.mean(np.sum((a - a.mean(0))[:, :dd] ** 2, 1))))
        th = t_vec[:, :dd] / np.linalg.norm(t_vec[:, :dd], axis=1, keepdims=True)
        sh = a[:, :dd] / np.linalg.norm(a[:, :dd], axis=1, keepdims=True)
        dims.append(dd * np.mean(np.sum(th * sh, 1)) ** 2)
    return np.array(caps), np.array(rads), np.array(dims)


def unequal_manifolds(seed=0, n=12, sizes=(4, 7, 5, 9, 3)):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=n) * 2 + rng.normal(size=(m, n)) * rng.uniform(0.3, 1.5) for m in sizes]


def test_matches_reference_definitions_unequal_sizes():
    manifolds = unequal_manifolds()
    rng = np.random.default_rng(5)
    t_vecs = [rng.normal(size=(15, min(12, len(m)) + 1)) for m in manifolds]
    out = mftma.manifold_analysis(manifolds, 0.0, 15, t_vecs=t_vecs, dtype=np.float64)
    caps, rads, dims = reference_pipeline(manifolds, t_vecs, 0.0)
    np.testing.assert_allclose(out['capacities'], caps, rtol=1e-4)
    np.testing.assert_allclose(out['radii'], rads, rtol=1e-4)
    np.testing.assert_allclose(out['dimensions'], dims, rtol=1e-4)
    assert out['capacity'] == pytest.approx(1 / np.mean(1 / caps), rel=1e-4)
    # A plausible bug (no division by the center norm) is detected.
    _, bad_rads, _ = reference_pipeline(manifolds, t_vecs, 0.0, normalise=False)
    assert not np.allclose(out['radii'], bad_rads, rtol=1e-2)
    # float32 default agrees with float64.
    out32 = mftma.manifold_analysis(manifolds, 0.0, 15, t_vecs=t_vecs)
    np.testing.assert_allclose(out32['radii'], rads, rtol=1e-3)
    np.testing.assert_allclose(out32['capacities'], caps, rtol=1e-3)


def test_point_manifolds_have_capacity_two():
    rng = np.random.default_rng(0)
    points = [rng.normal(size=(1, 40)) for _ in range(8)]
    out = mftma.manifold_analysis(points, 0.0, 4000, seed=3, n_reps=1)
    # One point: capacity = 1 / E[max(t0, 0)^2] = 2 (Gardner), radius 0, dim 0.
    assert out['capacity'] == pytest.approx(2.0, rel=0.06)
    np.testing.assert_allclose(out['radii'], 0.0, atol=1e-6)
    np.testing.assert_allclose(out['dimensions'], 0.0, atol=1e-6)
    t_vecs = [rng.normal(size=(50, 2)) for _ in points]
    exact = mftma.manifold_analysis(points, 0.0, 50, t_vecs=t_vecs, n_reps=1)
    want = [1 / np.mean(np.maximum(t[:, 1], 0) ** 2) for t in t_vecs]
    np.testing.assert_allclose(exact['capacities'], want, rtol=1e-4)


def test_invariant_to_global_scaling_and_rotation():
    manifolds = unequal_manifolds(seed=2, n=16, sizes=(6, 6, 8, 5, 7, 6))
    q, _ = np.linalg.qr(np.random.default_rng(9).normal(size=(16, 16)))
    base = mftma.manifold_analysis(manifolds, 0.0, 40, dtype=np.float64)
    moved = mftma.manifold_analysis([3.7 * m @ q for m in manifolds], 0.0, 40, dtype=np.float64)
    for key in ('radii', 'dimensions', 'capacities'):
        np.testing.assert_allclose(moved[key], base[key], rtol=1e-4)
    assert moved['center_correlation'] == pytest.approx(base['center_correlation'], rel=1e-6)
    assert moved['K'] == base['K']


def test_center_correlation_and_planted_low_rank_structure():
    rng = np.random.default_rng(4)
    centers = np.outer(rng.normal(size=12), rng.normal(size=50)) * 3 + 0.3 * rng.normal(size=(12, 50))
    fa = mftma.center_low_rank_structure(centers, 2, np.random.default_rng(0))
    xb = centers - centers.mean(0)
    norms = np.linalg.norm(xb, axis=1)
    corr = (xb @ xb.T) / np.outer(norms, norms)
    assert fa['center_correlation'] == pytest.approx((np.abs(corr).sum() - 12) / (12 * 11), rel=1e-9)
    assert fa['center_correlation'] > 0.5
    assert fa['K'] >= 1 and fa['residual_correlations'][fa['K'] - 1] < 0.3
    assert np.allclose(fa['basis'].T @ fa['basis'], np.eye(fa['K']), atol=1e-8)


def test_random_projection_of_wide_layers():
    rng = np.random.default_rng(1)
    manifolds = [rng.normal(size=(5, 300)) for _ in range(6)]
    out = mftma.manifold_analysis(manifolds, 0.0, 30, max_features=100)
    assert np.all(np.isfinite(out['capacities'])) and out['solver']['converged']
    assert np.all(out['dimensions'] <= 5 + 1e-6)
