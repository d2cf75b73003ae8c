"""P4's activation maximisation + function dissimilarity: one compiled vmapped
program against a Python loop over (replica, class, seed), same machine, same run.

Workload: R classifier replicas (memjax `cnn`, random initialisation), a DCGAN
generator (random initialisation; timings do not depend on training), C
classes, S seeds, `iterations` steps of plain gradient ascent (lr 0.05) on z,
then Dist(a, b) for all R x R ordered pairs.

- batched: the analysis's own programs: `Ascent` ((class, seed) as one batch, `lax.fori_loop` over
  iterations) and `pair_dissimilarity`, lifted over replicas by `memjax.engine.lifting` (`--lifting`);
- loop: `make_single_ascent` jitted once, called for each of R x C x S
  problems; the KL of one (a, b, class, seed) image jitted once, called
  R x R x C x S times; means / stds over classes and seeds in NumPy.

Compilation is timed separately (the batched programs' first call, less a second
call's time; the loop's `jit(...).lower(...).compile()`); the run times exclude it. Both sides must agree (max |difference| of z and of Dist).

    python scripts/bench_dissimilarity.py                           # CPU, ~minutes
    python scripts/bench_dissimilarity.py --replicas=10 --seeds=100 --iterations=1000 \\
        --model=vgg11 --image=32 --out=benchmarks/dissimilarity_gpu.json   # P4 scale
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from memjax.analysis.dissection import activation_maximization as am
from memjax.analysis.dissection.kl_distance import kl_divergence, pair_dissimilarity
from memjax.engine.lifting import choose, lift, stacked
from memjax.train.pixel_classifier import ModelGroup, pixel_classifier, stack_variables
from memjax.models import build_model
from memjax.models.dcgan import dcgan


def timed(fn, *args):
    """(fn(*args), its wall seconds)."""
    start = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, time.perf_counter() - start


def compiled(fn, *args):
    start = time.perf_counter()
    program = (fn if hasattr(fn, 'lower') else jax.jit(fn)).lower(*args).compile()
    return program, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--model', default='cnn')
    parser.add_argument('--width', type=int, default=16)
    parser.add_argument('--image', type=int, default=28, help='28 (28x28x1) or 32 (32x32x3)')
    parser.add_argument('--replicas', type=int, default=4)
    parser.add_argument('--classes', type=int, default=10)
    parser.add_argument('--seeds', type=int, default=8)
    parser.add_argument('--iterations', type=int, default=100)
    parser.add_argument('--learning_rate', type=float, default=0.05)
    parser.add_argument('--generator_width', type=int, default=64)
    parser.add_argument('--lifting', default='auto', choices=('auto', 'vmap', 'map', 'loop'),
                        help="the replica lifting of the batched programs (auto: memjax's rule for this machine)")
    parser.add_argument('--out', default='benchmarks/dissimilarity_cpu.json')
    args = parser.parse_args()
    r, c, s = args.replicas, args.classes, args.seeds
    load_before = os.getloadavg()
    lifting = choose(args.lifting, args.replicas)[0]
    shape = (28, 28, 1) if args.image == 28 else (32, 32, 3)

    model = build_model(args.model, c, width=args.width)
    variables = stack_variables([model.init(jax.random.PRNGKey(i), shape) for i in range(r)])
    mean, std = np.full(shape[-1], 0.45, np.float32), np.full(shape[-1], 0.25, np.float32)
    classifier = pixel_classifier(model, mean, std)
    generator, _ = dcgan(shape, args.generator_width)
    g_vars = generator.init(jax.random.PRNGKey(100), jnp.zeros((1, 100)))
    z0 = am.latents_from_seeds(range(s))
    classes = jnp.arange(c)

    # Batched: the analysis's two lifted programs (the first call compiles).
    ascent = lift(am.Ascent(classifier, generator, args.iterations, args.learning_rate), ('variables',), lifting)
    _, first_ascent = timed(lambda: stacked(ascent(variables=variables, g_vars=g_vars, z0=z0, classes=classes)))
    (z, _, final), run_ascent = timed(lambda: stacked(ascent(variables=variables, g_vars=g_vars, z0=z0,
                                                             classes=classes)))
    compile_ascent = max(first_ascent - run_ascent, 0.0)
    pixels_fn = jax.jit(lambda g, zs: am.generator_pixels(generator, g, zs))
    images = pixels_fn(g_vars, z.reshape(r * c * s, -1)).reshape(r, c, s, *shape)
    group = ModelGroup(classifier, variables)
    _, first_pair = timed(lambda: pair_dissimilarity(group, images, group, lifting))
    per_seed, run_pair = timed(lambda: pair_dissimilarity(group, images, group, lifting))
    compile_pair = max(first_pair - run_pair, 0.0)
    per_seed = np.asarray(per_seed)

    # Loop: one problem at a time, each program jitted once.
    single = am.make_single_ascent(classifier, generator, args.iterations, args.learning_rate)
    replica = [jax.tree_util.tree_map(lambda x, i=i: x[i], variables) for i in range(r)]
    single, compile_single = compiled(single, replica[0], g_vars, z0[0], jnp.int32(0))
    start = time.perf_counter()
    z_loop = np.zeros((r, c, s, z0.shape[1]), np.float32)
    for i in range(r):
        for j in range(c):
            for k in range(s):
                z_loop[i, j, k] = np.asarray(single(replica[i], g_vars, z0[k], jnp.int32(j))[0])
    loop_ascent = time.perf_counter() - start
    loop_images = pixels_fn(g_vars, jnp.asarray(z_loop.reshape(r * c * s, -1))).reshape(r, c, s, *shape)

    def one_kl(v_a, v_b, x):  # x [1, H, W, C]
        return kl_divergence(classifier(v_a, x), classifier(v_b, x))[0]

    kl_one, compile_kl = compiled(one_kl, replica[0], replica[0], loop_images[0, 0, :1])
    start = time.perf_counter()
    kl = np.zeros((r, r, c, s), np.float32)
    for a in range(r):
        for b in range(r):
            for j in range(c):
                for k in range(s):
                    kl[a, b, j, k] = float(kl_one(replica[a], replica[b], loop_images[a, j, k][None]))
    loop_pair = time.perf_counter() - start
    loop_per_seed = kl.mean(axis=2)

    batched_total, loop_total = run_ascent + run_pair, loop_ascent + loop_pair
    result = {
        'date': datetime.datetime.now().isoformat(timespec='seconds'),
        'command': ' '.join([os.path.basename(sys.executable)] + sys.argv),
        'machine': {'platform': platform.platform(), 'processor': platform.processor() or platform.machine(),
                    'cpu_count': os.cpu_count(), 'backend': jax.default_backend(),
                    'device': jax.devices()[0].device_kind, 'jax': jax.__version__,
                    'load_average_1min_before_after': [load_before[0], os.getloadavg()[0]]},
        'settings': {'model': args.model, 'width': args.width, 'image_shape': list(shape), 'replicas': r,
                     'classes': c, 'seeds': s, 'iterations': args.iterations,
                     'learning_rate': args.learning_rate, 'generator_width': args.generator_width,
                     'lifting': lifting.kind},
        'batched': {'compile_ascent_s': compile_ascent, 'run_ascent_s': run_ascent,
                    'compile_dissimilarity_s': compile_pair, 'run_dissimilarity_s': run_pair,
                    'run_total_s': batched_total},
        'loop': {'calls_ascent': r * c * s, 'calls_kl': r * r * c * s,
                 'compile_ascent_s': compile_single, 'run_ascent_s': loop_ascent,
                 'compile_kl_s': compile_kl, 'run_kl_s': loop_pair, 'run_total_s': loop_total},
        'speedup_ascent': loop_ascent / run_ascent, 'speedup_dissimilarity': loop_pair / run_pair,
        'speedup_total': loop_total / batched_total,
        'max_abs_difference_z': float(np.max(np.abs(np.asarray(z) - z_loop))),
        'max_abs_difference_dist': float(np.max(np.abs(per_seed - loop_per_seed))),
        'final_objective_mean': float(np.mean(np.asarray(final))),
        'dist_mean_offdiagonal': float(per_seed.mean(axis=2)[~np.eye(r, dtype=bool)].mean()),
    }
    print(json.dumps(result, indent=2))
    print(f'{r} replicas x {c} classes x {s} seeds, {args.iterations} iterations: batched '
          f'{batched_total:.2f} s (+ compile {compile_ascent + compile_pair:.1f} s), loop {loop_total:.2f} s '
          f'(+ compile {compile_single + compile_kl:.1f} s), ratio {loop_total / batched_total:.1f}x')
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, 'w') as f:
        json.dump(result, f, indent=2)


if __name__ == '__main__':
    main()
