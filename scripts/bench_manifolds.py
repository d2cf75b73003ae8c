"""MFTMA estimator: memjax (all P * n_t QPs batched, jit) against a one-QP-at-a-time loop.

Workload: the random example of the reference README
(schung039/neural_manifolds_replicaMFT): ``np.random.seed(0)``,
P = 100 manifolds of M = 50 points in N = 5000 dimensions, kappa = 0, n_t = 200.

Timed:
  * memjax ``manifold_analysis`` end to end (first call including compilation,
    then a second call), float32 and float64;
  * the QP stage alone (anchor points for all 100 x 200 t: batched FISTA plus
    the capacity/radius/dimension formulas), after compilation;
  * the same QPs (same anchor coordinates and t, float64) solved one at a time
    in a Python loop with scipy: SLSQP (a generic QP solver, as cvxopt is in the
    reference) on a subset, extrapolated to all problems and labelled as such,
    and NNLS (exploiting the structure of the dual), and cvxopt if importable.

    PYTHONPATH=. JAX_PLATFORMS=cpu python scripts/bench_manifolds.py \
        [--reference-json=/tmp/ref_result.json] [--slsqp-manifolds=3] [--dump-problems=/tmp/qp.npz]

``--reference-json`` adds the numbers of a run of the reference code itself
(capacity, radius, dimension, center_correlation, K, seconds) to the output.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize

from memjax.analysis.geometry import mftma

PUBLISHED = {'capacity': 0.04, 'radius': 1.47, 'dimension': 36.17, 'center_correlation': 0.01, 'K': 1}
SCALARS = ('capacity', 'radius', 'dimension', 'center_correlation', 'K')


def problems(data, seed, dtype):
    """Anchor coordinates and t exactly as inside manifold_analysis."""
    x = jnp.asarray(np.stack(data).astype(dtype))
    mask = jnp.ones(x.shape[:2], bool)
    origin, centers = mftma._origin_and_centers(x, mask)
    fa = mftma.center_low_rank_structure(np.asarray(centers, np.float64), 10, np.random.default_rng(seed))
    points = mftma._anchor_coordinates(x, mask, origin, jnp.asarray(fa['basis'], x.dtype))
    key_t = jax.random.split(jax.random.PRNGKey(seed))[1]
    t = jax.random.normal(key_t, (x.shape[0], 200, points.shape[-1]), x.dtype)
    return points, mask, t


def loop_qps(points, t, kappa, solver, manifolds):
    """One QP per (manifold, t) where t violates a constraint; returns (seconds, count)."""
    count, start = 0, time.perf_counter()
    for i in manifolds:
        s = points[i]
        d = s.shape[1] - 1
        for tt in t[i]:
            s0 = s[np.argmax(s[:, :d] @ tt[:d])]
            if tt @ s0 < -kappa:
                continue
            count += 1
            if solver == 'slsqp':
                scipy.optimize.minimize(
                    lambda v: np.sum((v - tt) ** 2), np.zeros_like(tt), jac=lambda v: 2 * (v - tt),
                    constraints=[{'type': 'ineq', 'fun': lambda v: -(s @ v + kappa), 'jac': lambda v: -s}],
                    method='SLSQP', options={'ftol': 1e-12, 'maxiter': 1000})
            elif solver == 'nnls':
                scipy.optimize.nnls(s.T, tt + kappa * np.eye(len(tt))[-1])
            else:
                import cvxopt
                cvxopt.solvers.options.update(show_progress=False, abstol=1e-12, reltol=1e-12, feastol=1e-12)
                cvxopt.solvers.qp(cvxopt.matrix(np.eye(len(tt))), cvxopt.matrix(-tt[:, None]),
                                  cvxopt.matrix(s), cvxopt.matrix(-kappa * np.ones((len(s), 1))))
    return time.perf_counter() - start, count


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--reference-json', default=None)
    parser.add_argument('--slsqp-manifolds', type=int, default=3)
    parser.add_argument('--out', default='benchmarks/manifolds_cpu.json')
    parser.add_argument('--dump-problems', default=None, help='save the float64 QP inputs (npz)')
    args = parser.parse_args()

    np.random.seed(0)
    data = [np.random.randn(5000, 50).T for _ in range(100)]  # README generation, [M, N] each
    result = {
        'date': subprocess.run(['date'], capture_output=True, text=True).stdout.strip(),
        'command': 'PYTHONPATH=. JAX_PLATFORMS=cpu python ' + ' '.join(sys.argv),
        'machine': {'platform': platform.platform(), 'processor': platform.processor(),
                    'cpu_count': os.cpu_count(), 'python': platform.python_version(),
                    'jax': jax.__version__, 'backend': jax.default_backend(),
                    'load_average_at_start': os.getloadavg()},
        'workload': 'reference README random example: P=100, M=50, N=5000, kappa=0, n_t=200',
        'published_reference_values': PUBLISHED,
    }

    for name, dtype in (('float32', np.float32), ('float64', np.float64)):
        t0 = time.perf_counter()
        out = mftma.manifold_analysis(data, 0.0, 200, dtype=dtype)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = mftma.manifold_analysis(data, 0.0, 200, dtype=dtype)
        second = time.perf_counter() - t0
        result[f'memjax_{name}'] = {**{k: out[k] for k in SCALARS}, 'solver': out['solver'],
                                    'first_call_s': first, 'second_call_s': second}
        print(name, result[f'memjax_{name}'])

    # QP stage alone, float32 (default) and float64, after compilation.
    for name, dtype in (('float32', np.float32), ('float64', np.float64)):
        ctx = jax.enable_x64(True) if dtype == np.float64 else jax.enable_x64(False)
        with ctx:
            points, mask, t = problems(data, 0, dtype)
            dims = jnp.full((100,), 50.0, points.dtype)
            tol = 1e-9 if dtype == np.float64 else 1e-5
            run = lambda: jax.block_until_ready(mftma._anchor_geometry_jit(
                points, mask, t, dims, jnp.asarray(0.0, points.dtype), eps=1e-8, tol=tol, max_iters=20000))
            t0 = time.perf_counter()
            run()
            compile_s = time.perf_counter() - t0
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                run()
                times.append(time.perf_counter() - t0)
            result[f'qp_stage_{name}'] = {'compile_plus_first_run_s': compile_s, 'median_s': float(np.median(times)),
                                          'runs_s': times}
            if dtype == np.float64:
                points64, t64 = np.asarray(points), np.asarray(t)
    print('qp stage', result['qp_stage_float32'], result['qp_stage_float64'])

    if args.dump_problems:
        np.savez(args.dump_problems, points=points64, t=t64)
    memjax_qp = result['qp_stage_float32']['median_s']
    loops = {}
    sub = list(range(args.slsqp_manifolds))
    secs, count = loop_qps(points64, t64, 0.0, 'slsqp', sub)
    loops['scipy_slsqp'] = {'measured_s': secs, 'measured_qps': count, 'manifolds_measured': len(sub),
                            'extrapolated_all_100_manifolds_s': secs * 100 / len(sub),
                            'note': 'measured on a subset of manifolds, extrapolated linearly'}
    secs, count = loop_qps(points64, t64, 0.0, 'nnls', range(100))
    loops['scipy_nnls'] = {'measured_s': secs, 'measured_qps': count, 'manifolds_measured': 100}
    try:
        import cvxopt  # noqa: F401
        secs, count = loop_qps(points64, t64, 0.0, 'cvxopt', sub)
        loops['cvxopt'] = {'measured_s': secs, 'measured_qps': count, 'manifolds_measured': len(sub),
                           'extrapolated_all_100_manifolds_s': secs * 100 / len(sub)}
    except ImportError:
        loops['cvxopt'] = 'not importable in this environment'
    for v in loops.values():
        if isinstance(v, dict):
            total = v.get('extrapolated_all_100_manifolds_s', v['measured_s'])
            v['ratio_loop_over_memjax_qp_stage_float32'] = total / memjax_qp
    result['one_qp_at_a_time_loops'] = loops
    print('loops', loops)

    if args.reference_json and os.path.exists(args.reference_json):
        ref = json.load(open(args.reference_json))
        result['reference_run'] = ref
        if 'qp_s' in ref:
            result['reference_run']['ratio_cvxopt_qp_time_over_memjax_qp_stage_float32'] = ref['qp_s'] / memjax_qp
        if 'total_s' in ref:
            result['reference_run']['ratio_total_over_memjax_float32_second_call'] = (
                ref['total_s'] / result['memjax_float32']['second_call_s'])

    print(f"\n{'':20s}{'memjax f32':>12s}{'memjax f64':>12s}{'published':>12s}{'ref run':>12s}")
    for k in SCALARS:
        ref = result.get('reference_run', {}).get(k, float('nan'))
        print(f"{k:20s}{result['memjax_float32'][k]:12.4f}{result['memjax_float64'][k]:12.4f}"
              f"{PUBLISHED[k]:12.4f}{ref:12.4f}")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    result['machine']['load_average_at_end'] = os.getloadavg()
    with open(args.out, 'w') as f:
        json.dump(result, f, indent=2, default=float)
    print('wrote', args.out)


if __name__ == '__main__':
    main()
