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
- full batch, blockwise (`blockwise_grams`, `full_batch_cka`): the N x N
  Gram of every unit, K = X X^T, accumulated from blocks X_a X_b^T of example
  blocks (b <= a; the other half by symmetry), then centred exactly as H K H:
  the full-batch estimators of all N examples without holding any unit's
  [N, D] features, only two blocks' [B, D]. From one centred Gram both the
  biased HSIC (P1's) and the unbiased one follow (see `full_batch_cka`).

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

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp
from memjax.engine.lifting import Lifting, lift, stacked

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
    return rbf_from_linear(linear_gram(xc), bandwidth)


def rbf_from_linear(gram: jax.Array, bandwidth: float = 0.5) -> jax.Array:
    """The Gaussian kernel [N, N] of `rbf_gram` from the linear Gram [N, N] of the same
    features (best of centred ones): d2_ij = K_ii + K_jj - 2 K_ij."""
    sq = jnp.diagonal(gram)
    d2 = jnp.maximum(sq[:, None] + sq[None, :] - 2.0 * gram, 0.0)
    d2 = jnp.where(jnp.eye(gram.shape[0], dtype=bool), 0.0, d2)
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


@dataclasses.dataclass(frozen=True)
class AllPairs:
    """CKA [La, Lb] of every layer of one model A against every layer of one model B (lifted over replicas)."""

    kernel: str = 'linear'
    debiased: bool = False
    bandwidth: float = 0.5

    def __call__(self, features_a: tuple, features_b: tuple) -> jax.Array:
        ga = stacked_grams(features_a, self.kernel, self.debiased, self.bandwidth)
        gb = stacked_grams(features_b, self.kernel, self.debiased, self.bandwidth)
        return cka_from_sums(*pair_sums(ga, gb))


def cka_all_pairs(features_a: tuple, features_b: tuple, kernel: str = 'linear', debiased: bool = False,
                  bandwidth: float = 0.5, lifting: Lifting | str = 'vmap') -> jax.Array:
    """Every layer of model A against every layer of model B, for all replicas, in one call.

    Args:
      features_a: tuple of La arrays [R, N, ...] (layer l of each of R replicas).
      features_b: tuple of Lb arrays [R, N, ...].
      lifting: how the R replicas are lifted (`memjax.engine.lifting`).
    Returns:
      CKA [R, La, Lb]. Each layer's Gram is formed once and reused for all pairs.
    """
    program = lift(AllPairs(kernel, debiased, float(bandwidth)), ('features_a', 'features_b'), lifting)
    return stacked(program(features_a=tuple(features_a), features_b=tuple(features_b)))


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


# ---- Full batch, blockwise: the N x N Grams of all N examples from blocks of examples ----

@jax.jit
def _gram_block(features_a: tuple, features_b: tuple) -> jax.Array:
    """X_a X_b^T of every unit: features [Ba, D_l] and [Bb, D_l] -> [L, Ba, Bb]."""
    return jnp.stack([_matmul(a.astype(jnp.float32), b.astype(jnp.float32).T)
                      for a, b in zip(features_a, features_b)])


@functools.partial(jax.jit, donate_argnums=0)
def _put_block(grams: jax.Array, block: jax.Array, a, b) -> jax.Array:
    """grams [L, N, N] (updated in place) with block [L, Ba, Bb] at rows a.., columns b.. and
    its transpose at rows b.., columns a.. (a diagonal block is made exactly symmetric)."""
    if block.shape[1] == block.shape[2]:
        block = jnp.where(a == b, 0.5 * (block + jnp.swapaxes(block, 1, 2)), block)
    grams = jax.lax.dynamic_update_slice(grams, block, (0, a, b))
    return jax.lax.dynamic_update_slice(grams, jnp.swapaxes(block, 1, 2), (0, b, a))


def _zero_if_constant(centred: jax.Array, raw: jax.Array) -> jax.Array:
    """A centred Gram below 1e-10 of its raw Gram's energy is rounding noise: exact zeros."""
    return jnp.where(jnp.sum(centred * centred) <= 1e-10 * jnp.sum(raw * raw), 0.0, centred)


@functools.partial(jax.jit, donate_argnums=0, static_argnames=('kernel',))
def finish_grams(grams: jax.Array, kernel: str = 'linear', bandwidth: float = 0.5) -> jax.Array:
    """Raw linear Grams [L, N, N] -> centred kernel Grams H K H [L, N, N], one unit at a time and
    in place (the input is donated; temporaries are a few [N, N]). rbf: the Gaussian kernel of the
    same features (distances from the centred linear Gram, see `rbf_from_linear`), then centred."""
    def unit(l, g):
        raw = jax.lax.dynamic_index_in_dim(g, l, keepdims=False)
        centred = _zero_if_constant(center_gram(raw), raw)
        if kernel == 'rbf':
            raw = rbf_from_linear(centred, bandwidth)
            centred = _zero_if_constant(center_gram(raw), raw)
        return jax.lax.dynamic_update_index_in_dim(g, centred, l, 0)
    return jax.lax.fori_loop(0, grams.shape[0], unit, grams)


def blockwise_grams(features_of: Callable[[int, int], tuple], n: int, block: int, kernel: str = 'linear',
                    bandwidth: float = 0.5) -> jax.Array:
    """Centred kernel Grams [L, n, n] of n examples, accumulated from blocks of `block` examples.

    Args:
      features_of: (start, stop) -> tuple of L arrays [stop - start, D_l], the units' features
        of examples start..stop-1 (a forward pass).
    Returns:
      H K H for every unit, K = X X^T over all n examples (or its Gaussian kernel): exactly the
      one-shot Gram, since K's block (a, b) is X_a X_b^T and centring follows accumulation.
    Memory: the result, L x n^2 x 4 bytes, plus the features of two blocks and one [L, B, B]
    block; no unit's [n, D] features are ever held. Cost: features_of is called
    nb (nb + 1) / 2 times for nb = ceil(n / block) blocks (block a once, each b < a again
    beside it), and the Gram products cost n^2 sum(D_l) multiply-adds (half by symmetry,
    plus the diagonal blocks).
    """
    starts = list(range(0, n, block))
    grams = None
    for i, a in enumerate(starts):
        features_a = features_of(a, min(a + block, n))
        if grams is None:
            grams = jnp.zeros((len(features_a), n, n), jnp.float32)
        for b in starts[:i + 1]:
            features_b = features_a if b == a else features_of(b, min(b + block, n))
            grams = _put_block(grams, _gram_block(features_a, features_b), a, b)
            del features_b
            grams.block_until_ready()  # bounded memory: no forward passes queued ahead
        del features_a
    return finish_grams(grams, kernel, bandwidth)


def _unbiased_inner(inner, diag_a, diag_b, n: int, diagonal: bool):
    """<U(K), U(L)> from <Kc, Lc> and the diagonals of centred Grams Kc = H K H, Lc = H L H.

    U-centring ignores additive row/column terms, so U(K) = U(Kc); and Kc has zero row sums, so
    <U(Kc), U(Lc)> = <Kc, Lc> - n/(n-2) <diag Kc, diag Lc> + tr Kc tr Lc / ((n-1)(n-2)).
    inner: [La, Lb] (or [L] when `diagonal`: unit l of A with unit l of B); diag_a: [La, n]; diag_b: [Lb, n].
    """
    trace_a, trace_b = jnp.sum(diag_a, axis=1), jnp.sum(diag_b, axis=1)
    if diagonal:
        cross, traces = jnp.sum(diag_a * diag_b, axis=1), trace_a * trace_b
    else:
        cross, traces = _matmul(diag_a, diag_b.T), trace_a[:, None] * trace_b[None, :]
    return inner - n / (n - 2) * cross + traces / ((n - 1) * (n - 2))


@functools.partial(jax.jit, static_argnames=('diagonal',))
def full_batch_cka(grams_a: jax.Array, grams_b: jax.Array, diagonal: bool = False) -> tuple[jax.Array, jax.Array]:
    """Full-batch CKA of the units of A against those of B, biased and debiased.

    Args:
      grams_a: [La, N, N], grams_b: [Lb, N, N]: centred kernel Grams (`blockwise_grams`).
      diagonal: only unit l of A against unit l of B (La = Lb = L).
    Returns:
      (biased CKA, HSIC = tr(K H L H) / (N-1)^2 as in Kornblith et al. and P1;
       debiased CKA, the unbiased HSIC of Song et al. 2012, as `u_center_gram`),
      each [La, Lb], or [L] when `diagonal`.
    The common HSIC scale cancels in the ratio. Constant units give 0 (see the module doc).
    Memory: the inner products are fused multiply-reductions, no [N, N] product is stored
    (one unit of A at a time against all of B for all pairs).
    """
    n = grams_a.shape[-1]

    def inner(a, b):
        return jnp.sum(a * b, axis=(-2, -1))
    xx, yy = inner(grams_a, grams_a), inner(grams_b, grams_b)
    xy = inner(grams_a, grams_b) if diagonal else jax.lax.map(lambda g: inner(g[None], grams_b), grams_a)
    diag_a, diag_b = jnp.diagonal(grams_a, axis1=1, axis2=2), jnp.diagonal(grams_b, axis1=1, axis2=2)
    uxy = _unbiased_inner(xy, diag_a, diag_b, n, diagonal)
    uxx = _unbiased_inner(xx, diag_a, diag_a, n, True)
    uyy = _unbiased_inner(yy, diag_b, diag_b, n, True)
    if diagonal:
        return _safe_cka(xy, xx, yy), _safe_cka(uxy, uxx, uyy)
    return cka_from_sums(xy, xx, yy), cka_from_sums(uxy, uxx, uyy)
