"""The stitching layer S and its initialisations.

S maps model A's activation at a stage boundary to the input model B expects
there: a 1x1 convolution on conv maps `[B, H, W, C] -> [B, H, W, C]`, a linear
layer on vectors `[B, D] -> [B, D]` (tokens `[B, T, D]` are mapped per token);
both with a bias. With `batchnorm=True` it is BN -> S -> BN (Bansal et al.
2021), whose own statistics update while S trains.

Initialisations:
- identity: S starts as the identity (shapes are equal: A and B share the architecture);
- random: Flax's default (LeCun normal kernel, zero bias);
- least_squares: the pseudo-inverse fit of B's activation from A's on the
  stitch-training data, [X, 1] W = Y per position (Csiszarik et al. 2021),
  accumulated over batches as normal equations.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from memjax.errors import ConfigError
from memjax.models.layers import batch_norm

INITS = ('identity', 'random', 'least_squares')


class StitchLayer(nn.Module):
    """S: a 1x1 conv / linear map over the last axis, with bias (and optional BN around it)."""

    features: int
    batchnorm: bool = False

    @nn.compact
    def __call__(self, x, train: bool = False):
        if self.batchnorm:
            x = batch_norm(train, jnp.float32, name='bn_in')(x)
        x = nn.Dense(self.features, name='map')(x)  # acts on the channel axis: a 1x1 conv on maps
        if self.batchnorm:
            x = batch_norm(train, jnp.float32, name='bn_out')(x)
        return x


def init_stitch(layer: StitchLayer, activation_shape: tuple, key: jax.Array, init: str) -> dict:
    """Variables of S for activations of shape [B, ..., C]: identity or random (see module doc)."""
    if init not in INITS:
        raise ConfigError(f"analysis.stitching.init={init!r}; use one of: {', '.join(INITS)}")
    variables = layer.init(key, jnp.zeros((1, *activation_shape[1:]), jnp.float32))
    variables = jax.tree_util.tree_map(lambda x: x, dict(variables))
    if init == 'identity':
        params = dict(variables['params'])
        params['map'] = {'kernel': jnp.eye(layer.features, dtype=jnp.float32),
                         'bias': jnp.zeros((layer.features,), jnp.float32)}
        variables['params'] = params
    return variables


@jax.jit
def normal_equations(x: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Sufficient statistics of the fit [x, 1] W = y over one batch.

    x: [B, ..., Cx], y: [B, ..., Cy] (every position is a sample).
    Returns (X^T X [Cx+1, Cx+1], X^T Y [Cx+1, Cy]) with X = [x, 1].
    """
    x = x.reshape(-1, x.shape[-1]).astype(jnp.float32)
    y = y.reshape(-1, y.shape[-1]).astype(jnp.float32)
    x = jnp.concatenate([x, jnp.ones((x.shape[0], 1), jnp.float32)], axis=1)
    hp = jax.lax.Precision.HIGHEST
    return jnp.matmul(x.T, x, precision=hp), jnp.matmul(x.T, y, precision=hp)


def least_squares_params(xtx: np.ndarray, xty: np.ndarray) -> dict:
    """{'kernel' [Cx, Cy], 'bias' [Cy]} = pinv(X^T X) X^T Y (float64 on the host).

    Singular values below 1e-5 of the largest are cut: the statistics are float32
    sums, and dead (all-zero) or collinear channels would otherwise make the fit
    depend on rounding.
    """
    solution = np.linalg.pinv(np.asarray(xtx, np.float64), rcond=1e-5) @ np.asarray(xty, np.float64)
    return {'kernel': jnp.asarray(solution[:-1], jnp.float32), 'bias': jnp.asarray(solution[-1], jnp.float32)}
