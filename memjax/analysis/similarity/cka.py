"""Centered kernel alignment (CKA): the estimators, jit-compiled.

CKA(X, Y) = HSIC(X, Y) / sqrt(HSIC(X, X) HSIC(Y, Y)) for representations
X: [N, Dx], Y: [N, Dy] of the same N examples (rows). Conv maps are flattened
by the caller (or mean-pooled, see `memjax.analysis.similarity.representations`).

Estimators:
- linear, biased (Kornblith et al. 2019; the papers' formula):
  HSIC = tr(K H L H) / (N-1)^2 with K = X X^T. Two equal forms:
  Gram space (N x N) and feature space, ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F);
  `linear_cka` picks the cheaper one by shape (feature space wins for D < ~2N/3).
- debiased: the unbiased HSIC estimator (Song et al. 2012), as the inner
  product of U-centred Grams (zero diagonal). Near 0 for independent
  representations, where biased CKA is about D/(N+D).
- rbf: Gaussian kernel exp(-|xi - xj|^2 / (2 s^2)), s^2 = `bandwidth`^2 x the
  median of the squared pairwise distances over the full matrix (diagonal
  included), as Kornblith et al.'s reference code; biased or debiased.
- minibatch (Nguyen, Raghu & Kornblith 2021): HSIC estimates accumulated over
  batches of examples, CKA = sum HSIC_xy / sqrt(sum HSIC_xx sum HSIC_yy), so no
  N x D matrix of all N examples is ever held. With the unbiased estimator per
  batch the result does not drift with the batch size; the biased one does,
  so the analyses refuse it with minibatches (`CkaSettings.validate`).

All computations run in float32 with matmul precision HIGHEST (no TF32/bf16
passes on GPUs). Linear Grams are formed from the raw features and centred as
H K H, like the reference implementation (Kornblith et al.); forming X X^T
first keeps the fast GEMM path (see BENCHMARKS.md).

Degenerate input: if a representation is constant over the examples, its
centred Gram is zero (up to rounding, which is cleared: below 1e-10 of the
raw Gram's energy) and HSIC(X, X) = 0; CKA with it is then DEFINED AS 0 (no
shared structure can be measured), never NaN.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

HIGHEST = jax.lax.Precision.HIGHEST
_TINY = 1e-30


def _matmul(a, b):
    return jnp.matmul(a, b, precision=HIGHEST)


def _safe_cka(xy, xx, yy):
    """xy / sqrt(xx yy), with 0 where a self-similarity vanishes (constant input)."""
    den = jnp.sqrt(jnp.maximum(xx, 0.0) * jnp.maximum(yy, 0.0))
    return jnp.where(den > _TINY, xy / jnp.where(den > _TINY, den, 1.0), 0.0)


def center_features(x: jax.Array) -> jax.Array:
    """x: [N, D] -> x minus its mean over the N examples (float32).

    The mean is a matrix-vector product (XLA:CPU's column reduction of a wide
    [N, D] array measured 35x slower), and the barrier keeps XLA from fusing the
    subtraction into the following matmul, which loses the fast GEMM kernel.
    A representation whose centred energy is below 1e-10 of its raw energy is
    constant up to rounding and is returned as exact zeros.
    """
    x = x.astype(jnp.float32)
    mean = _matmul(jnp.ones((1, x.shape[0]), jnp.float32), x) / x.shape[0]
    xc = x - mean
    constant = jnp.sum(xc * xc) <= 1e-10 * jnp.sum(x * x)
    return jax.lax.optimization_barrier(jnp.where(constant, 0.0, xc))


def linear_gram(x: jax.Array) -> jax.Array:
    """Linear kernel X X^T: [N, D] -> [N, N] (centred afterwards, as H K H)."""
    x = x.astype(jnp.float32)
    return _matmul(x, x.T)


def rbf_gram(x: jax.Array, bandwidth: float = 0.5) -> jax.Array:
    """Gaussian kernel [N, N] as in Kornblith et al.'s reference code (`gram_rbf`).

    d2 = squared pairwise distances; sigma^2 = bandwidth^2 x the median of d2
    over the FULL N x N matrix (its zero diagonal included, as the reference's
    np.median(sq_distances)); K = exp(-d2 / (2 sigma^2)). `bandwidth` is the
    reference's `threshold` (a fraction of the median distance).
    """
    xc = center_features(x)  # distances are translation invariant; centring only reduces rounding
    sq = jnp.sum(xc * xc, axis=1)
    d2 = jnp.maximum(sq[:, None] + sq[None, :] - 2.0 * _matmul(xc, xc.T), 0.0)
    d2 = jnp.where(jnp.eye(x.shape[0], dtype=bool), 0.0, d2)
    sigma2 = jnp.maximum(bandwidth ** 2 * jnp.median(d2), _TINY)
    return jnp.exp(-d2 / (2.0 * sigma2))


def center_gram(gram: jax.Array) -> jax.Array:
    """H K H: [N, N] with zero row and column means."""
    row = jnp.mean(gram, axis=0, keepdims=True)
    col = jnp.mean(gram, axis=1, keepdims=True)
    return gram - row - col + jnp.mean(gram)


def u_center_gram(gram: jax.Array) -> jax.Array:
    """U-centring (zero diagonal): <U(K), U(L)> / (N (N-3)) is the unbiased HSIC."""
    n = gram.shape[0]
    eye = jnp.eye(n, dtype=bool)
    gram = jnp.where(eye, 0.0, gram)
    means = jnp.sum(gram, axis=0) / (n - 2)
    means = means - jnp.sum(means) / (2 * (n - 1))
    gram = gram - means[:, None] - means[None, :]
    return jnp.where(eye, 0.0, gram)


def hsic_scale(n: int, debiased: bool) -> float:
    """The factor turning <T(K), T(L)> into HSIC: 1/(N-1)^2, or 1/(N(N-3)) unbiased."""
    return 1.0 / (n * (n - 3)) if debiased else 1.0 / (n - 1) ** 2


def transformed_gram(x: jax.Array, kernel: str = 'linear', debiased: bool = False,
                     bandwidth: float = 0.5) -> jax.Array:
    """The Gram of features x: [N, D], centred (biased) or U-centred (debiased): [N, N].

    HSIC(X, Y) = hsic_scale(N) * sum(T(X) * T(Y)).
    """
    gram = linear_gram(x) if kernel == 'linear' else rbf_gram(x, bandwidth)
    centred = u_center_gram(gram) if debiased else center_gram(gram)
    # Constant features: the centred Gram is rounding noise; make it exactly zero.
    constant = jnp.sum(centred * centred) <= 1e-10 * jnp.sum(gram * gram)
    return jnp.where(constant, 0.0, centred)


@functools.partial(jax.jit, static_argnames=('debiased',))
def cka_from_grams(gram_x: jax.Array, gram_y: jax.Array, debiased: bool = False) -> jax.Array:
    """CKA of two raw kernel matrices [N, N] (they are centred / U-centred here)."""
    t = u_center_gram if debiased else center_gram
    gx, gy = t(gram_x.astype(jnp.float32)), t(gram_y.astype(jnp.float32))
    return _safe_cka(jnp.sum(gx * gy), jnp.sum(gx * gx), jnp.sum(gy * gy))


@jax.jit
def feature_space_linear_cka(x: jax.Array, y: jax.Array) -> jax.Array:
    """Biased linear CKA in feature space: cost O(N Dx Dy), no N x N matrix."""
    xc, yc = center_features(x), center_features(y)
    xy = jnp.sum(_matmul(yc.T, xc) ** 2)
    xx = jnp.sqrt(jnp.sum(_matmul(xc.T, xc) ** 2))
    yy = jnp.sqrt(jnp.sum(_matmul(yc.T, yc) ** 2))
    den = xx * yy
    return jnp.where(den > _TINY, xy / jnp.where(den > _TINY, den, 1.0), 0.0)


@functools.partial(jax.jit, static_argnames=('debiased',))
def gram_space_linear_cka(x: jax.Array, y: jax.Array, debiased: bool = False) -> jax.Array:
    """Linear CKA through N x N Grams: cost O(N^2 (Dx + Dy))."""
    gx = transformed_gram(x, 'linear', debiased)
    gy = transformed_gram(y, 'linear', debiased)
    return _safe_cka(jnp.sum(gx * gy), jnp.sum(gx * gx), jnp.sum(gy * gy))


def flatten_examples(x: jax.Array) -> jax.Array:
    """[N, ...] -> [N, D]."""
    return x.reshape(x.shape[0], -1)


def linear_cka(x: jax.Array, y: jax.Array, debiased: bool = False) -> jax.Array:
    """Linear CKA of x: [N, ...] and y: [N, ...], in the cheaper of the two forms.

    The debiased estimator always uses the Gram form.
    """
    x, y = flatten_examples(x), flatten_examples(y)
    n, dx, dy = x.shape[0], x.shape[1], y.shape[1]
    if not debiased and n * (dx * dy + dx * dx + dy * dy) < n * n * (dx + dy):
        return feature_space_linear_cka(x, y)
    return gram_space_linear_cka(x, y, debiased=debiased)


@functools.partial(jax.jit, static_argnames=('debiased',))
def rbf_cka(x: jax.Array, y: jax.Array, bandwidth: float = 0.5, debiased: bool = False) -> jax.Array:
    """CKA with Gaussian kernels of bandwidth `bandwidth` x median distance."""
    gx = transformed_gram(flatten_examples(x), 'rbf', debiased, bandwidth)
    gy = transformed_gram(flatten_examples(y), 'rbf', debiased, bandwidth)
    return _safe_cka(jnp.sum(gx * gy), jnp.sum(gx * gx), jnp.sum(gy * gy))


@functools.partial(jax.jit, static_argnames=('kernel', 'debiased'))
def stacked_grams(features: tuple, kernel: str = 'linear', debiased: bool = False,
                  bandwidth: float = 0.5) -> jax.Array:
    """Transformed Grams of several layers of one model, each computed once.

    Args:
      features: tuple of L arrays [N, ...] (any widths).
    Returns:
      [L, N, N].
    """
    return jnp.stack([transformed_gram(flatten_examples(f), kernel, debiased, bandwidth) for f in features])


@jax.jit
def pair_sums(grams_a: jax.Array, grams_b: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """All-pairs inner products of transformed Grams.

    Args:
      grams_a: [..., La, N, N]; grams_b: [..., Lb, N, N] (same leading axes).
    Returns:
      (xy [..., La, Lb], xx [..., La], yy [..., Lb]).
    """
    xy = jnp.einsum('...inm,...jnm->...ij', grams_a, grams_b, precision=HIGHEST)
    xx = jnp.einsum('...inm,...inm->...i', grams_a, grams_a, precision=HIGHEST)
    yy = jnp.einsum('...jnm,...jnm->...j', grams_b, grams_b, precision=HIGHEST)
    return xy, xx, yy


def cka_from_sums(xy: jax.Array, xx: jax.Array, yy: jax.Array) -> jax.Array:
    """CKA [..., La, Lb] from accumulated pair sums (see `pair_sums`)."""
    return _safe_cka(xy, xx[..., :, None], yy[..., None, :])


@functools.partial(jax.jit, static_argnames=('kernel', 'debiased'))
def cka_all_pairs(features_a: tuple, features_b: tuple, kernel: str = 'linear', debiased: bool = False,
                  bandwidth: float = 0.5) -> jax.Array:
    """Every layer of model A against every layer of model B, for all replicas, in one call.

    Args:
      features_a: tuple of La arrays [R, N, ...] (layer l of each of R replicas).
      features_b: tuple of Lb arrays [R, N, ...].
    Returns:
      CKA [R, La, Lb]. Each layer's Gram is formed once and reused for all pairs.
    """
    grams = jax.vmap(lambda *fs: stacked_grams(fs, kernel, debiased, bandwidth))
    ga, gb = grams(*features_a), grams(*features_b)
    return cka_from_sums(*pair_sums(ga, gb))


class MinibatchCKA:
    """Minibatch CKA (Nguyen, Raghu & Kornblith 2021): HSIC accumulated over batches.

    Feed transformed Grams of each batch of examples (from `stacked_grams` with
    the same `debiased` flag); the result is
    sum_b HSIC_b(X, Y) / sqrt(sum_b HSIC_b(X, X) sum_b HSIC_b(Y, Y)).
    Shapes follow `pair_sums`: grams [..., L, b, b] -> CKA [..., La, Lb].
    """

    def __init__(self, debiased: bool = True):
        self.debiased = debiased
        self._sums = None

    def update(self, grams_a: jax.Array, grams_b: jax.Array) -> None:
        scale = hsic_scale(grams_a.shape[-1], self.debiased)
        sums = tuple(s * scale for s in pair_sums(grams_a, grams_b))
        self._sums = sums if self._sums is None else tuple(a + b for a, b in zip(self._sums, sums))

    def result(self) -> jax.Array:
        if self._sums is None:
            raise ValueError('MinibatchCKA.result() before any update()')
        return cka_from_sums(*self._sums)
