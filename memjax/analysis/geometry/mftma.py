"""Replica mean-field theoretic manifold analysis (MFTMA), batched in JAX.

Estimates, for P object manifolds given as point clouds, the manifold
classification capacity, anchor radius and anchor dimension (Chung, Lee &
Sompolinsky, PRX 2018) after removing the low-rank structure shared by the
manifold centers (Cohen, Chung, Lee & Sompolinsky, Nat. Commun. 2020), as used
by Stephenson et al., ICLR 2021 (P5). Definitions follow the reference
implementation ``manifold_analysis_corr`` of schung039/neural_manifolds_replicaMFT:

1. optional random projection of layers wider than ``max_features`` (unit-norm
   Gaussian rows, as the reference's ``analyze`` helper does above 5000);
2. data centred by the mean of all points; the centers' correlation structure
   is fitted with ranks K = 1, 2, ... (Grassmann optimisation of the summed
   squared residual center correlations, ``n_reps`` random starts, most stable
   start kept, stop after three consecutive increases of the residual mean
   |correlation|), K = argmin of that residual, and every manifold is projected
   onto the null space of the K fitted center directions;
3. each manifold is centred on its own projected center and divided by that
   center's norm, rotated into its own span (D = min(N, M_i) coordinates) and
   given the constant center coordinate 1;
4. for ``n_t`` Gaussian t per manifold the anchor point s(t) solves
   ``min ||v - t||^2 s.t. s_m . v + kappa <= 0`` (all P * n_t problems at once
   on the device, see ``mftma_solver``), or is the max-projection point when t
   already satisfies the constraints;
5. capacity 1 / mean(max(t.s + kappa, 0)^2 / |s|^2), radius and dimension from
   eqs. 28-29 of the PRX paper, exactly as the reference computes them.
"""

import contextlib
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
import scipy.optimize

from memjax.analysis.geometry.mftma_solver import solve_dual_qp


def _mean_abs_offdiag_corr(x):
    """x: [P, d] -> mean |cosine| between distinct rows (reference ``res_coeff``)."""
    n = np.linalg.norm(x, axis=1, keepdims=True)
    c = (x @ x.T) / (n @ n.T)
    p = x.shape[0]
    return float((np.sum(np.abs(c)) - p) / (p * (p - 1)))


def _fa_cost_and_grad(w, x, gram):
    """Summed reference ``square_corrcoeff_full_cost`` over a batch of subspaces.

    Args:
        w: [R, d, K] full-rank matrices; only their column spans matter (the
            projector is Pi = w (w^T w)^-1 w^T, so no orthonormality constraint).
        x: [P, d] centers in a d-dim basis.
        gram: [P, P] x x^T.

    Returns:
        (cost, grad [R, d, K]) with cost = sum_r 1/2 sum_mn R_mn^2 / (c0_m c0_n),
        R = x (I - Pi_r) x^T the residual center Gram matrix and c0 = diag(R).
        With Gamma = dcost/dR (including the dependence through c0),
        grad = -2 (I - Pi) x^T Gamma x w (w^T w)^-1.
    """
    r, d, k = w.shape
    a = (x @ np.swapaxes(w, 0, 1).reshape(d, r * k)).reshape(-1, r, k).swapaxes(0, 1)  # [R, P, K]
    g_inv = np.linalg.inv(np.swapaxes(w, 1, 2) @ w)  # [R, K, K]
    ag = a @ g_inv
    resid = gram[None] - ag @ np.swapaxes(a, 1, 2)
    c0 = np.diagonal(resid, axis1=1, axis2=2)  # [R, P]
    e = resid / (c0[:, :, None] * c0[:, None, :])
    re = resid * e
    cost = 0.5 * np.sum(re)
    idx = np.arange(x.shape[0])
    e[:, idx, idx] -= np.sum(re, axis=2) / c0  # e is now dcost/dresid
    m = (x.T @ np.swapaxes(e @ ag, 0, 1).reshape(-1, r * k)).reshape(d, r, k).swapaxes(0, 1)
    m = m - w @ (g_inv @ (np.swapaxes(w, 1, 2) @ m))
    return cost, -2.0 * m


def center_low_rank_structure(centers, n_reps=10, rng=None, max_iter=1000):
    """Low-rank center-correlation structure (reference ``fun_FA``), float64.

    Args:
        centers: [P, N] manifold centers.
        n_reps: random restarts per rank K.
        rng: numpy Generator for the restarts.
        max_iter: L-BFGS iterations per rank (all starts optimised jointly;
            their objectives are independent).

    Returns:
        dict with ``basis`` [N, K] (orthonormal center directions to remove),
        ``K``, ``center_correlation`` (mean |correlation| of the centred centers
        before removal) and ``residual_correlations`` [K_tried].
    """
    rng = np.random.default_rng(0) if rng is None else rng
    centers = np.asarray(centers, np.float64)
    p, n = centers.shape
    xb = centers - centers.mean(axis=0, keepdims=True)
    q, _ = scipy.linalg.qr(xb.T, mode='economic')
    q = q[:, :p - 1]
    x = xb @ q  # [P, d]
    corr0 = _mean_abs_offdiag_corr(x)
    sv = np.linalg.svd(xb, compute_uv=False)
    total = np.cumsum(sv ** 2) / np.sum(sv ** 2)
    max_k = int(np.argmax(np.where(total < 0.95, total, 0.0))) + 11
    max_k = min(max_k, x.shape[1] - 1)  # the reference would divide by 0 beyond
    if max_k < 1:
        return {'basis': np.zeros((n, 0)), 'K': 0, 'center_correlation': corr0,
                'residual_correlations': np.zeros(0)}
    row_norm = np.linalg.norm(x, axis=1)
    gram = x @ x.T
    v1, solutions, costs = None, [], []
    for k in range(1, max_k + 1):
        starts = []
        for _ in range(n_reps):
            sx = rng.standard_normal(p) @ x
            v0 = sx[:, None] if v1 is None else np.concatenate([sx[:, None], v1], axis=1)
            starts.append(np.linalg.qr(v0)[0])
        w0 = np.stack(starts)

        def fun(flat, shape=w0.shape):
            val, grad = _fa_cost_and_grad(flat.reshape(shape), x, gram)
            return val, grad.ravel()

        opt = scipy.optimize.minimize(fun, w0.ravel(), jac=True, method='L-BFGS-B',
                                      options={'maxiter': max_iter, 'gtol': 1e-6, 'ftol': 1e-10})
        vs = np.linalg.qr(opt.x.reshape(w0.shape))[0]
        resid = x[None] - (x @ vs) @ np.swapaxes(vs, 1, 2)
        stability = np.min(np.linalg.norm(resid, axis=2) / row_norm, axis=1)
        v1 = vs[int(np.argmax(stability))]
        solutions.append(v1)
        costs.append(_mean_abs_offdiag_corr(x - x @ v1 @ v1.T))
        if k > 4 and costs[-1] > costs[-2] > costs[-3] > costs[-4]:
            break
    best = int(np.argmin(costs))
    return {'basis': q @ solutions[best], 'K': best + 1, 'center_correlation': corr0,
            'residual_correlations': np.asarray(costs)}


@jax.jit
def _origin_and_centers(x, mask):
    """x: [P, M, N], mask: [P, M] -> (mean of all points [N], centers [P, N])."""
    w = mask.astype(x.dtype)[..., None]
    origin = jnp.sum(x * w, axis=(0, 1)) / jnp.sum(w)
    centers = jnp.sum(x * w, axis=1) / jnp.sum(w, axis=1)
    return origin, centers


@jax.jit
def _anchor_coordinates(x, mask, origin, basis):
    """Null-space projection, center normalisation and per-manifold rotation.

    x: [P, M, N], mask: [P, M], origin: [N], basis: [N, K].
    Returns points [P, M, Dmax + 1] (Dmax = min(N, M); coordinates >= D_i of
    manifold i are zero, the last coordinate is the center coordinate 1;
    padded points are all zero). The rotation is the R factor of a QR of the
    manifold's normalised points, with non-negative diagonal.
    """
    w = mask.astype(x.dtype)[..., None]
    xr = x - origin
    xr = xr - jnp.einsum('pmk,nk->pmn', xr @ basis, basis)
    c = jnp.sum(xr * w, axis=1, keepdims=True) / jnp.sum(w, axis=1, keepdims=True)
    s = (xr - c) / jnp.linalg.norm(c, axis=-1, keepdims=True) * w
    r = jnp.linalg.qr(jnp.swapaxes(s, 1, 2), mode='r')  # [P, Dmax, M]
    # Canonical basis: rows of R with non-negative diagonal (LAPACK's sign is
    # arbitrary; t is isotropic, but this makes results rotation-invariant for a
    # fixed seed).
    r = r * jnp.where(jnp.diagonal(r, axis1=1, axis2=2) < 0, -1.0, 1.0)[..., None]
    return jnp.concatenate([jnp.swapaxes(r, 1, 2), w], axis=-1)


def _anchor_geometry(points, mask, t, dims, kappa, *, eps, tol, max_iters):
    """Capacity, radius and dimension of each manifold from its anchor points.

    points: [P, M, D1] (from ``_anchor_coordinates``), mask: [P, M],
    t: [P, T, D1] Gaussian vectors (zero in unused coordinates), dims: [P]
    (D_i). Returns (capacities [P], radii [P], dimensions [P], solver info).
    """
    d = points.shape[-1] - 1
    gram = jnp.einsum('pmd,pnd->pmn', points, points)
    b = jnp.einsum('ptd,pmd->ptm', t, points) + kappa
    # Max-projection point of each t (reference ``maxproj``).
    proj = jnp.where(mask[:, None, :], jnp.einsum('ptd,pmd->ptm', t[..., :d], points[..., :d]), -jnp.inf)
    s0 = jnp.take_along_axis(points[:, None], jnp.argmax(proj, -1)[..., None, None], axis=2)[:, :, 0]
    gt = jnp.sum(t * s0, axis=-1)
    alpha, info = solve_dual_qp(gram, b, mask, tol=tol, max_iters=max_iters)
    sa = jnp.einsum('ptm,pmd->ptd', alpha, points)  # t - v
    interior = (gt + kappa < 0) | (jnp.linalg.norm(sa, axis=-1) < eps)
    total = jnp.sum(alpha, axis=-1, keepdims=True)
    s = jnp.where(interior[..., None], s0, sa / jnp.where(interior[..., None], 1.0, total))
    # Capacity (PRX 2018 eqs. 16-17).
    max_ts = jnp.maximum(jnp.sum(t * s, axis=-1) + kappa, 0.0)
    s_sum = jnp.sum(s * s, axis=-1)
    slam = jnp.where(s_sum > 0, max_ts ** 2 / jnp.where(s_sum > 0, s_sum, 1.0), 0.0)
    capacity = 1.0 / jnp.mean(slam, axis=-1)
    # Radius (eq. 28): spread of anchor points around their mean.
    ds = (s - jnp.mean(s, axis=1, keepdims=True))[..., :d] / s[..., d:]
    radius = jnp.sqrt(jnp.mean(jnp.sum(ds ** 2, axis=-1), axis=-1))
    # Dimension (eq. 29).
    t_hat = t[..., :d] / jnp.linalg.norm(t[..., :d], axis=-1, keepdims=True)
    s_hat = s[..., :d] / jnp.sqrt(jnp.sum(s[..., :d] ** 2, axis=-1, keepdims=True) + 1e-12)
    dimension = dims * jnp.mean(jnp.sum(t_hat * s_hat, axis=-1), axis=-1) ** 2
    info = dict(info, skipped_fraction=jnp.mean(gt + kappa < 0))
    return capacity, radius, dimension, info


_anchor_geometry_jit = jax.jit(_anchor_geometry, static_argnames=('eps', 'tol', 'max_iters'))


def manifold_analysis(manifolds, kappa=0.0, n_t=200, seed=0, *, dtype=jnp.float32,
                      max_features=5000, n_reps=10, t_vecs=None, tol=None,
                      max_iters=20000, eps=1e-8, fa_max_iter=1000):
    """MFTMA capacity, radius and dimension of P manifolds (batched, on device).

    Args:
        manifolds: sequence of P arrays [M_i, N] (points x features).
        kappa: margin.
        n_t: Gaussian t vectors per manifold.
        seed: seeds the random projection, the t vectors (jax.random) and the
            restarts of the center-correlation fit (numpy).
        dtype: float32 (default) or float64 (computation under ``jax.enable_x64``);
            the center-correlation fit always runs in float64.
        max_features: layers with N > max_features are first randomly projected
            to max_features dimensions (Gaussian matrix with unit-norm rows), as
            the reference's ``analyze`` helper does with its default 5000.
            ``None`` disables the projection.
        n_reps: random restarts per rank in the center-correlation fit (the
            reference's ``n_reps``, default 10).
        t_vecs: optional sequence of P arrays [n_t, D_i + 1] (D_i = min(N, M_i),
            last column the center coordinate) to use instead of sampling.
        tol: KKT tolerance of the batched QP solver (default 1e-5 for float32,
            1e-9 for float64).
        max_iters: iteration cap of the QP solver.
        eps: ||v - t|| below which t counts as inside the feasible cone.
        fa_max_iter: L-BFGS iteration cap per rank in the correlation fit.

    Returns:
        dict with ``capacities``, ``radii``, ``dimensions`` ([P] numpy arrays),
        scalars ``capacity`` (1 / mean(1 / capacities)), ``radius`` and
        ``dimension`` (means), ``center_correlation`` (mean |correlation| of the
        centred manifold centers), ``K`` (rank of the removed center structure),
        and ``solver`` (iterations, max_kkt_residual, converged,
        skipped_fraction: share of t needing no QP).
    """
    x64 = np.dtype(dtype) == np.float64
    tol = (1e-9 if x64 else 1e-5) if tol is None else tol
    ctx = jax.enable_x64(True) if x64 else contextlib.nullcontext()
    with ctx:
        arrays = [np.asarray(m) for m in manifolds]
        p, n = len(arrays), arrays[0].shape[1]
        sizes = np.array([a.shape[0] for a in arrays])
        m_max = int(sizes.max())
        x = np.zeros((p, m_max, n), np.dtype(dtype))
        for i, a in enumerate(arrays):
            x[i, :a.shape[0]] = a
        mask = jnp.asarray(np.arange(m_max)[None] < sizes[:, None])
        x = jnp.asarray(x)
        key_proj, key_t = jax.random.split(jax.random.PRNGKey(seed))
        if max_features is not None and n > max_features:
            proj = jax.random.normal(key_proj, (max_features, n), x.dtype)
            proj = proj / jnp.linalg.norm(proj, axis=1, keepdims=True)
            x = jnp.einsum('pmn,fn->pmf', x, proj)
            n = max_features
        origin, centers = _origin_and_centers(x, mask)
        fa = center_low_rank_structure(np.asarray(centers, np.float64), n_reps,
                                       np.random.default_rng(seed), fa_max_iter)
        points = _anchor_coordinates(x, mask, origin, jnp.asarray(fa['basis'], x.dtype))
        d_max = points.shape[-1] - 1
        dims = np.minimum(sizes, n)
        if t_vecs is None:
            t = jax.random.normal(key_t, (p, n_t, d_max + 1), x.dtype)
            keep = np.concatenate([np.arange(d_max)[None] < dims[:, None], np.ones((p, 1), bool)], 1)
            t = t * jnp.asarray(keep, x.dtype)[:, None, :]
        else:
            t = np.zeros((p, n_t, d_max + 1), np.dtype(dtype))
            for i, tv in enumerate(t_vecs):
                t[i, :, :dims[i]], t[i, :, -1] = tv[:, :dims[i]], tv[:, dims[i]]
            t = jnp.asarray(t)
        cap, rad, dim, info = _anchor_geometry_jit(
            points, mask, t, jnp.asarray(dims, x.dtype), jnp.asarray(kappa, x.dtype),
            eps=eps, tol=tol, max_iters=max_iters)
        cap, rad, dim = (np.asarray(v, np.float64) for v in (cap, rad, dim))
        if not bool(info['converged']):
            warnings.warn(f"MFTMA QP solver stopped at max_iters={max_iters} with KKT residual "
                          f"{float(info['max_kkt_residual']):.2e} > tol={tol:.1e}")
        return {
            'capacities': cap, 'radii': rad, 'dimensions': dim,
            'capacity': float(1.0 / np.mean(1.0 / cap)), 'radius': float(np.mean(rad)),
            'dimension': float(np.mean(dim)), 'center_correlation': fa['center_correlation'],
            'K': fa['K'], 'solver': {k: np.asarray(v).item() for k, v in info.items()},
        }
