"""All-pairs linear CKA: memjax (jit, one Gram per layer) against plain NumPy, same data.

Workload: 10 stages x 8 replicas with ResNet-18-sized activations (CIFAR:
stem and layer1.x 32x32x64, layer2.x 16x16x128, layer3.x 8x8x256, layer4.x
4x4x512, head 10), N examples. For every replica, every stage is compared with
every stage of replica 0 (the clean model): CKA [8, 10, 10]. Layers are
generated one at a time (as an analysis streams them from checkpoints), their
centred Grams kept, then all pairs are formed.

Both sides compute the same formula (centre features, Gram, centre, Frobenius
inner products) in float32 on the same arrays; NumPy uses its BLAS. Times
exclude generating the activations and memjax's compilation (one warm-up).

    python scripts/bench_cka.py --examples=512        # CPU
    python scripts/bench_cka.py --examples=10000      # GPU
"""

from __future__ import annotations

import argparse
import datetime
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from memjax.analysis.similarity.cka import cka_from_sums, pair_sums, transformed_gram

STAGES = (('stem', 32 * 32 * 64), ('layer1.0', 32 * 32 * 64), ('layer1.1', 32 * 32 * 64),
          ('layer2.0', 16 * 16 * 128), ('layer2.1', 16 * 16 * 128), ('layer3.0', 8 * 8 * 256),
          ('layer3.1', 8 * 8 * 256), ('layer4.0', 4 * 4 * 512), ('layer4.1', 4 * 4 * 512), ('head', 10))


def activations(stage: int, replicas: int, n: int, dim: int) -> np.ndarray:
    """Correlated across replicas (a shared part plus replica noise), float32 [R, N, D]."""
    rng = np.random.default_rng(stage)
    shared = rng.standard_normal((1, n, dim), dtype=np.float32)
    return shared + 0.5 * rng.standard_normal((replicas, n, dim), dtype=np.float32)


def numpy_cka(layers: list[np.ndarray]) -> np.ndarray:
    grams = []
    for x in layers:  # [R, N, D]
        per_replica = []
        for xr in x:
            xc = xr - xr.mean(axis=0, keepdims=True)
            k = xc @ xc.T
            k = k - k.mean(axis=0, keepdims=True) - k.mean(axis=1, keepdims=True) + k.mean()
            per_replica.append(k)
        grams.append(np.stack(per_replica))
    g = np.stack(grams, axis=1)  # [R, L, N, N]
    flat = g.reshape(g.shape[0], g.shape[1], -1)
    xy = np.einsum('rif,jf->rij', flat, flat[0])
    norms = np.sqrt(np.einsum('rif,rif->ri', flat, flat))
    return xy / (norms[:, :, None] * norms[0][None, None, :])


_grams = jax.jit(jax.vmap(transformed_gram))


@jax.jit
def _pairs(grams):  # [R, L, N, N] -> [R, L, L] against replica 0
    reference = jnp.broadcast_to(grams[:1], grams.shape)
    return cka_from_sums(*pair_sums(grams, reference))


def memjax_cka(layers: list) -> jax.Array:
    grams = jnp.stack([_grams(x) for x in layers], axis=1)
    return _pairs(grams)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--examples', type=int, default=512)
    parser.add_argument('--replicas', type=int, default=8)
    parser.add_argument('--repeats', type=int, default=2)
    parser.add_argument('--out', default='bench_cka.json')
    args = parser.parse_args()
    n, r = args.examples, args.replicas
    host = [activations(i, r, n, dim) for i, (_, dim) in enumerate(STAGES)]
    device = [jax.device_put(x) for x in host]
    jax.block_until_ready(memjax_cka(device))  # compile
    start = time.perf_counter()
    for _ in range(args.repeats):
        ours = memjax_cka(device)
    jax.block_until_ready(ours)
    t_memjax = (time.perf_counter() - start) / args.repeats
    start = time.perf_counter()
    for _ in range(args.repeats):
        reference = numpy_cka(host)
    t_numpy = (time.perf_counter() - start) / args.repeats
    difference = float(np.max(np.abs(np.asarray(ours) - reference)))
    result = {'date': datetime.date.today().isoformat(), 'backend': jax.default_backend(),
              'device': jax.devices()[0].device_kind, 'examples': n, 'replicas': r, 'stages': len(STAGES),
              'memjax_seconds': t_memjax, 'numpy_seconds': t_numpy, 'speedup': t_numpy / t_memjax,
              'max_abs_difference': difference}
    print(json.dumps(result, indent=2))
    print(f'all-pairs CKA {r} replicas x {len(STAGES)} stages, N={n}: memjax {t_memjax:.2f} s, '
          f'NumPy {t_numpy:.2f} s, ratio {t_numpy / t_memjax:.2f}x (max |diff| {difference:.1e})')
    with open(args.out, 'w') as f:
        json.dump(result, f, indent=2)


if __name__ == '__main__':
    main()
