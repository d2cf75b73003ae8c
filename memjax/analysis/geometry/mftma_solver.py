"""Batched solver for the MFTMA per-t quadratic program.

For one manifold with points ``s_m`` (rows of ``S``, shape ``[M, D+1]``) and one
Gaussian vector ``t`` (``[D+1]``) the replica theory needs

    v* = argmin_v ||v - t||^2   subject to   s_m . v + kappa <= 0  for all m.

Its Lagrange dual is a non-negative least-squares-like problem in ``alpha``
(``[M]``, one multiplier per manifold point):

    min_{alpha >= 0}  f(alpha) = 1/2 alpha^T G alpha - b^T alpha,
    G = S S^T  ([M, M]),   b = S t + kappa  ([M]),   v* = t - S^T alpha*.

All (manifold, t) problems share the Gram matrix of their manifold, so the
problems of all manifolds and all t are solved together with FISTA (accelerated
projected gradient, step 1/L with L the largest eigenvalue of G, with
O'Donoghue-Candes gradient restarts) inside one ``jax.lax.while_loop`` that
stops when the largest KKT residual over all problems is below ``tol``.
Manifolds with fewer points are padded; padded points carry ``mask == False``
and keep ``alpha == 0``.
"""

import jax
import jax.numpy as jnp


def kkt_residual(alpha, gram, b, mask, lipschitz):
    """Scaled KKT (natural) residual of dual iterates.

    Args:
        alpha: [P, T, M] non-negative multipliers.
        gram: [P, M, M] Gram matrices G = S S^T.
        b: [P, T, M] linear terms S t + kappa.
        mask: [P, M] bool, True for real (non-padded) points.
        lipschitz: [P] largest eigenvalue of each G.

    Returns:
        [P, T] residuals ``max_m |min(L alpha_m, grad_m)| / (1 + max_m |b_m|)``;
        zero exactly at a KKT point (alpha >= 0, grad >= 0 i.e. primal
        feasibility, alpha_m grad_m = 0 complementarity).
    """
    grad = jnp.einsum('ptm,pmn->ptn', alpha, gram) - b
    r = jnp.abs(jnp.minimum(lipschitz[:, None, None] * alpha, grad))
    r = jnp.where(mask[:, None, :], r, 0.0)
    scale = 1.0 + jnp.max(jnp.where(mask[:, None, :], jnp.abs(b), 0.0), axis=-1)
    return jnp.max(r, axis=-1) / scale


def solve_dual_qp(gram, b, mask, *, tol, max_iters):
    """Solve all dual QPs ``min_{alpha>=0} 1/2 a^T G a - b^T a`` at once.

    Args:
        gram: [P, M, M] per-manifold Gram matrices (zero rows/cols for padding).
        b: [P, T, M] linear terms, one row per t vector.
        mask: [P, M] bool, True for real points.
        tol: stop once the largest scaled KKT residual (see ``kkt_residual``)
            of all P*T problems is below ``tol``.
        max_iters: iteration cap.

    Returns:
        (alpha [P, T, M], info) with info a dict of scalars: ``iterations``,
        ``max_kkt_residual`` (of the returned alpha) and ``converged``.
    """
    dtype = b.dtype
    fmask = mask.astype(dtype)[:, None, :]
    lipschitz = jnp.linalg.eigvalsh(gram)[:, -1]
    lipschitz = jnp.maximum(lipschitz, jnp.finfo(dtype).tiny)
    step = (1.0 / lipschitz)[:, None, None]

    # Warm start: all weight on the point most violating its constraint, with
    # the optimal one-point multiplier max(b_m, 0) / G_mm.
    bm = jnp.where(mask[:, None, :], b, -jnp.inf)
    best = jnp.argmax(bm, axis=-1)
    diag = jnp.diagonal(gram, axis1=1, axis2=2)
    gmm = jnp.take_along_axis(diag, best, axis=1)
    bmax = jnp.take_along_axis(b, best[..., None], axis=-1)[..., 0]
    a0 = jnp.maximum(bmax, 0.0) / jnp.maximum(gmm, jnp.finfo(dtype).tiny)
    alpha0 = jax.nn.one_hot(best, b.shape[-1], dtype=dtype) * a0[..., None] * fmask
    scale = 1.0 + jnp.max(jnp.where(mask[:, None, :], jnp.abs(b), 0.0), axis=-1)

    def cond(state):
        _, _, _, k, res = state
        return (k < max_iters) & (res > tol)

    def body(state):
        alpha, y, theta, k, _ = state
        grad = jnp.einsum('ptm,pmn->ptn', y, gram) - b
        new = jnp.maximum(y - step * grad, 0.0) * fmask
        # Gradient mapping at y: zero iff y is a KKT point.
        res = jnp.max(jnp.abs(y - new) * lipschitz[:, None, None], axis=-1) / scale
        restart = jnp.sum((y - new) * (new - alpha), axis=-1) > 0
        theta_new = 0.5 * (1.0 + jnp.sqrt(1.0 + 4.0 * theta * theta))
        beta = (theta - 1.0) / theta_new
        theta_new = jnp.where(restart, 1.0, theta_new)
        beta = jnp.where(restart, 0.0, beta)
        y_new = new + beta[..., None] * (new - alpha)
        return new, y_new, theta_new, k + 1, jnp.max(res)

    theta0 = jnp.ones(b.shape[:2], dtype)
    state = (alpha0, alpha0, theta0, jnp.array(0, jnp.int32), jnp.array(jnp.inf, dtype))
    alpha, _, _, iters, _ = jax.lax.while_loop(cond, body, state)
    final = jnp.max(kkt_residual(alpha, gram, b, mask, lipschitz))
    info = {'iterations': iters, 'max_kkt_residual': final, 'converged': final <= tol}
    return alpha, info
