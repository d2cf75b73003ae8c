"""Training throughput of R replicas under each lifting (loop, vmap, map; shard with several devices).

Measures memjax's real training path (the fit loop's `Chunk` of a
`ClassifierTrainable` step, lifted by `memjax.engine.lifting` as the trainer lifts it) on synthetic CIFAR-shaped data already on
the device: images/s = R x batch x steps / seconds, compilation and one warm-up
call excluded. R doubles from 1 while a measurement stays under the per-point
budget. A second table explains the CPU result: a grouped convolution (what
vmap makes of R convolutions with different weights) against the R separate
convolutions, forward and both gradients.

    python scripts/bench_replicas.py                      # CNN and ResNet-18, this backend
    python scripts/bench_replicas.py --models=cnn --max_replicas=256 --out=bench.json

Prints tables and writes JSON (--out). No timed tests depend on this.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from memjax.engine.fit import Chunk
from memjax.engine.lifting import Lifting, Replicas, lift, stacked
from memjax.engine.runner import runner_for
from memjax.experiment import base_config
from memjax.models import build_model
from memjax.train.loop import _Init, default_steps_per_call
from memjax.train.state import OptimizerSpec
from memjax.train.trainable import ClassifierTrainable


def _ready(*values) -> None:
    """Waits for every array of `values` (a loop lifting's `Replicas` tuple is not a pytree node: its items are)."""
    jax.block_until_ready([tuple(v) if isinstance(v, Replicas) else v for v in values])


def bench_training(model_name: str, replicas: int, strategy_name: str, batch: int, dtype: str,
                   image_shape=(32, 32, 3), num_classes: int = 10, calls: int = 2) -> dict:
    """Images/s of R replicas training under one lifting: the training program of `memjax.train.loop`
    (a `ClassifierTrainable` step in the fit loop's `Chunk`, lifted by `memjax.engine.lifting`)."""
    model = build_model(model_name, num_classes, dtype=dtype)
    steps = default_steps_per_call()
    n = batch * steps
    mean, std = np.full(image_shape[-1], 0.5, np.float32), np.full(image_shape[-1], 0.25, np.float32)
    trainable = ClassifierTrainable(runner_for(model, mean, std),
                                    OptimizerSpec.from_train(base_config().train, steps, weight_decay=False))
    lifting = Lifting(strategy_name)
    decays = jnp.full((replicas,), 5e-4, jnp.float32)
    state = lift(_Init(trainable, image_shape), ('key', 'weight_decay'), lifting)(
        key=jax.random.split(jax.random.PRNGKey(0), replicas), weight_decay=decays)
    rng = np.random.default_rng(0)
    pool = jax.device_put(rng.integers(0, 256, (n, *image_shape), dtype=np.uint8))
    own = lifting.place({'labels': jnp.asarray(rng.integers(0, num_classes, (replicas, n)), jnp.int32),
                         'noise_mask': jnp.zeros((replicas, n), bool)})
    common = {'pool': pool, 'data_key': jax.random.PRNGKey(1)}
    program = lift(Chunk(trainable, batch), ('state', 'steps', 'active', 'own'), lifting, static=('num_steps',),
                   carry='state')
    args = dict(order=jnp.arange(n, dtype=jnp.int32), weights=None,
                steps=lifting.place(jnp.full((replicas,), steps, jnp.int32)),
                active=lifting.place(jnp.ones((replicas,), bool)), epoch=jnp.asarray(1, jnp.int32),
                first_step=jnp.asarray(0, jnp.int32), own=own, common=common, num_steps=steps,
                running=np.ones(replicas, bool))
    start = time.perf_counter()
    state, loss = program(state=state, **args)
    _ready(state, loss)
    compile_and_first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(calls):
        state, loss = program(state=state, **args)
    _ready(state, loss)
    seconds = (time.perf_counter() - start) / (calls * steps)
    return {'model': model_name, 'strategy': strategy_name, 'replicas': replicas, 'batch': batch,
            'dtype': dtype, 'seconds_per_step': seconds, 'images_per_second': replicas * batch / seconds,
            'first_call_seconds': compile_and_first,
            'loss_finite': bool(np.all(np.isfinite(np.asarray(stacked(loss)))))}


def bench_grouped_conv(groups: int = 4, batch: int = 128, size: int = 16, cin: int = 32,
                       cout: int = 64) -> list[dict]:
    """A grouped conv (vmap's form) against `groups` separate convs, in one program each."""
    from jax import lax
    dn = ('NHWC', 'HWIO', 'NHWC')
    x = jax.random.normal(jax.random.PRNGKey(0), (batch, size, size, groups * cin))
    w = jax.random.normal(jax.random.PRNGKey(1), (3, 3, cin, groups * cout))

    def grouped(x, w):
        return lax.conv_general_dilated(x, w, (1, 1), 'SAME', dimension_numbers=dn,
                                        feature_group_count=groups)

    def separate(x, w):
        xs, ws = jnp.split(x, groups, -1), jnp.split(w, groups, -1)
        return jnp.concatenate([lax.conv_general_dilated(a, b, (1, 1), 'SAME', dimension_numbers=dn)
                                for a, b in zip(xs, ws)], -1)

    rows = []
    for part, make in (('forward', lambda f: f),
                       ('input gradient', lambda f: jax.grad(lambda x, w: f(x, w).sum(), argnums=0)),
                       ('weight gradient', lambda f: jax.grad(lambda x, w: f(x, w).sum(), argnums=1))):
        timings = {}
        for name, f in (('grouped', grouped), ('separate', separate)):
            fn = jax.jit(make(f))
            jax.block_until_ready(fn(x, w))
            start = time.perf_counter()
            for _ in range(3):
                out = fn(x, w)
            jax.block_until_ready(out)
            timings[name] = (time.perf_counter() - start) / 3
        rows.append({'part': part, 'grouped_ms': 1e3 * timings['grouped'],
                     'separate_ms': 1e3 * timings['separate'],
                     'grouped_over_separate': timings['grouped'] / timings['separate']})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--models', default='cnn,resnet18')
    parser.add_argument('--strategies', default='loop,vmap,map')
    parser.add_argument('--max_replicas', type=int, default=16)
    parser.add_argument('--batch', type=int, default=128)
    parser.add_argument('--dtype', default='float32')
    parser.add_argument('--budget_seconds', type=float, default=60.0,
                        help='stop doubling R once one measurement takes longer than this')
    parser.add_argument('--out', default='bench_replicas.json')
    args = parser.parse_args()

    device = jax.devices()[0]
    meta = {'date': datetime.date.today().isoformat(), 'backend': jax.default_backend(),
            'device': device.device_kind, 'host': platform.processor() or platform.machine(),
            'jax': jax.__version__, 'steps_per_call': default_steps_per_call(),
            'batch': args.batch, 'dtype': args.dtype}
    print(json.dumps(meta))
    results = []
    print(f"{'model':>9} {'strategy':>8} {'R':>4} {'images/s':>10} {'per replica':>12} {'s/step':>8}")
    for model in args.models.split(','):
        for strategy in args.strategies.split(','):
            r = 1
            while r <= args.max_replicas:
                start = time.perf_counter()
                row = bench_training(model, r, strategy, args.batch, args.dtype)
                results.append(row)
                print(f"{model:>9} {strategy:>8} {r:>4} {row['images_per_second']:>10.0f} "
                      f"{row['images_per_second'] / r:>12.0f} {row['seconds_per_step']:>8.3f}", flush=True)
                if time.perf_counter() - start > args.budget_seconds:
                    break
                r *= 2
    conv = bench_grouped_conv()
    print('\ngrouped conv (vmap over 4 replicas) vs 4 separate convs, 128x16x16x32 -> 64 per replica:')
    for row in conv:
        print(f"  {row['part']:>16}: grouped {row['grouped_ms']:8.1f} ms, separate {row['separate_ms']:8.1f} ms,"
              f" ratio {row['grouped_over_separate']:.1f}x")
    with open(args.out, 'w') as f:
        json.dump({'meta': meta, 'training': results, 'grouped_conv': conv}, f, indent=2)
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
