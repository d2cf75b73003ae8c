"""Everything a lent accelerator must measure, in one process, on synthetic data; one JSON out.

    python scripts/device_check.py --out=device_check.json            # a GPU/TPU machine, <= 8 minutes
    python scripts/device_check.py --smoke --out=/tmp/check.json      # tiny, on the CPU (CI)

Every measured program is the one `python -m memjax.plan` compiles (the same
`Job`): it is compiled ahead of time, run on synthetic inputs of its abstract
shapes (random images and weights: timing does not depend on the values), and
timed after one warm-up call. Per program the JSON holds the plan's prediction
(XLA's memory analysis, the roofline time) beside the measured step time and
the device's peak memory (`memory_stats()['peak_bytes_in_use']`, the process's
peak so far: programs run from small to large).

1. `training`: ResNet-18 and CNN training steps (CIFAR shapes, one replica,
   batch 128), float32 and bfloat16: images/s, FLOPs per image (XLA), MFU
   against the chip's peak (memjax.plan.accelerators).
2. `liftings`: the CNN's aggregate images/s over R = 1, 2, 4, ... 256
   replicas for each lifting (vmap, map, loop; shard with several devices).
3. `torch`: the same ResNet-18 and CNN steps in eager PyTorch (channels_last,
   autocast bfloat16 on CUDA) and memjax / PyTorch; skipped with a note
   without torch.
4. `neurons`: one step of P3's critical-neuron search (configs/cifar10_r9.py)
   at the `parallel` the plan chooses for this chip.
Needs jax, flax, optax, orbax and ml-collections; never tensorflow-datasets.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from memjax.experiment import base_config  # noqa: E402
from memjax.plan.accelerators import ACCELERATORS, accelerator, planned_lifting  # noqa: E402
from memjax.plan.analyses import analysis_jobs  # noqa: E402
from memjax.plan.programs import measure  # noqa: E402
from memjax.plan.shapes import run_shape  # noqa: E402
from memjax.plan.training import training_jobs  # noqa: E402
from memjax.engine.lifting import Lifting  # noqa: E402

KINDS = {'H100': 'h100', 'H200': 'h200', 'A100': 'a100', 'T4': 't4', 'v5 lite': 'v5e', 'v5e': 'v5e', 'v6': 'v6e'}


def this_chip():
    """(the accelerator table entry of the default device, its device_kind)."""
    kind = jax.devices()[0].device_kind
    for key, name in KINDS.items():
        if key.lower() in kind.lower():
            return ACCELERATORS[name], kind
    return accelerator('cpu'), kind


def synthetic(compiled, seed: int = 0):
    """Concrete arguments of a compiled program's abstract ones: uint8 images and float weights random, ints
    0, bools True (replicas active), PRNG keys random."""
    rng = np.random.default_rng(seed)

    def value(info):
        shape, dtype = info.shape, np.dtype(info.dtype)
        if dtype == np.uint8:
            return rng.integers(0, 256, shape, np.uint8)
        if dtype == np.uint32:
            return rng.integers(0, 2 ** 31, shape).astype(np.uint32)
        if dtype == np.bool_:
            return np.ones(shape, bool)
        if np.issubdtype(dtype, np.integer):
            return np.zeros(shape, dtype)
        return (0.05 * rng.standard_normal(shape)).astype(dtype)

    args, kwargs = jax.tree_util.tree_map(value, compiled.args_info)
    return jax.device_put(args), jax.device_put(kwargs)


def peak_bytes():
    stats = jax.devices()[0].memory_stats() or {}
    return stats.get('peak_bytes_in_use')


def run_program(compiled, calls: int) -> float:
    """Seconds per call of a compiled program, after one warm-up call."""
    args, kwargs = synthetic(compiled)
    jax.block_until_ready(compiled(*args, **kwargs))
    start = time.perf_counter()
    for _ in range(calls):
        out = compiled(*args, **kwargs)
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / calls


def check_job(job, chip, calls: int, repeat: int = 1) -> dict:
    """Plan row and measurement of one Job (`repeat`: calls per step, the loop lifting's R)."""
    out = job.compile()
    compiled, _ = out if isinstance(out, tuple) else (out, {})
    job = job.__class__(**{**job.__dict__, 'compile': lambda: out})
    row = measure(job, chip)
    seconds = run_program(compiled, calls * repeat) * repeat
    predicted = row.seconds_per_call * repeat
    return {'program': row.name, 'dtype': row.dtype, 'flops_per_step': row.flops * repeat,
            'predicted_seconds_per_step': predicted, 'measured_seconds_per_step': seconds,
            'predicted_over_measured': predicted / seconds, 'predicted_peak_bytes': row.memory,
            'measured_peak_bytes_so_far': peak_bytes(), 'mfu': row.flops * repeat / seconds / chip.peak(row.dtype)}


def run_config(model: str, replicas: int, batch: int, dtype: str, image_shape=(32, 32, 3), width=None):
    """A synthetic config: `replicas` clean replicas of `model`, one step's data, no analyses."""
    c = base_config()
    c.data.source, c.data.num_train, c.data.num_test, c.data.val_size = 'synthetic', batch * 4, batch, 0
    c.data.image_shape, c.data.num_classes = tuple(image_shape), 10
    c.seeds, c.noise.ratios, c.analyses = tuple(range(replicas)), (0.0,), ()
    c.model.name, c.model.dtype, c.model.width = model, dtype, width
    c.train.batch_size, c.train.stop_accuracy = batch, None
    return c


def training(chip, smoke: bool, deadline: float) -> list[dict]:
    rows = []
    batch, calls = (8, 2) if smoke else (128, 20)
    for model in ('cnn', 'resnet18'):
        for dtype in ('bfloat16',) if smoke and model == 'resnet18' else ('float32', 'bfloat16'):
            if time.time() > deadline:
                rows.append({'model': model, 'dtype': dtype, 'skipped': 'time budget'})
                continue
            shape = run_shape(run_config(model, 1, batch, dtype, width=8 if smoke else None))
            step = training_jobs(shape, Lifting('loop'))[0]
            row = check_job(step, chip, calls)
            rows.append({'model': model, 'dtype': dtype, 'batch': batch,
                         'images_per_second': batch / row['measured_seconds_per_step'],
                         'flops_per_image': row['flops_per_step'] / batch, **row})
    return rows


def liftings(chip, smoke: bool, deadline: float) -> list[dict]:
    rows = []
    batch, calls, top = (8, 1, 2) if smoke else (128, 10, 256)
    kinds = ['vmap', 'map', 'loop'] + (['shard'] if jax.device_count() > 1 else [])
    r = 1
    while r <= top:
        for kind in kinds:
            if time.time() > deadline:
                rows.append({'replicas': r, 'lifting': kind, 'skipped': 'time budget'})
                continue
            shape = run_shape(run_config('cnn', r, batch, 'float32', width=8 if smoke else None))
            lifting = Lifting(kind, jax.device_count() if kind == 'shard' else 0)
            step = training_jobs(shape, lifting)[0]
            row = check_job(step, chip, calls, repeat=r if kind == 'loop' else 1)
            rows.append({'replicas': r, 'lifting': kind,
                         'images_per_second': r * batch / row['measured_seconds_per_step'], **row})
        r *= 2
    return rows


def neurons(chip, smoke: bool, deadline: float) -> dict:
    if time.time() > deadline:
        return {'skipped': 'time budget'}
    import importlib
    config = importlib.import_module('configs.cifar10_r9').get_config('smoke' if smoke else None)
    config.analyses = ('neurons',)
    shape = run_shape(config)
    (job,) = analysis_jobs(shape, chip, ('neurons',))
    compiled, fields = job.compile()
    return {'config': 'configs/cifar10_r9.py' + (':smoke' if smoke else ''), 'chip': chip.name,
            **check_job(job.__class__(**{**job.__dict__, 'compile': lambda: (compiled, fields)}), chip, 2),
            'program': fields['name'], 'fits': fields['fix'] == '', 'fix': fields['fix']}


def torch_steps(batch: int, calls: int) -> dict:
    """Eager PyTorch training steps of ResNet-18 and the CNN (channels_last, autocast bf16 on CUDA): the
    networks and step of `scripts/bench_throughput.py`."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_throughput import torch_baseline
    rows = [torch_baseline(name, batch, calls) for name in ('resnet18', 'cnn')]
    if rows[0] is None:
        return {'skipped': 'torch is not installed'}
    import torch
    out = {'device': rows[0]['device'], 'autocast_bf16': rows[0]['autocast_bf16'], 'torch': torch.__version__}
    for row in rows:
        out[row['model']] = {'batch': row['batch'], 'images_per_second': row['images_per_second']}
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default='device_check.json')
    parser.add_argument('--smoke', action='store_true', help='tiny sizes on the CPU (seconds)')
    parser.add_argument('--budget_seconds', type=float, default=420.0, help='stop starting new measurements after')
    args = parser.parse_args(argv)
    start = time.time()
    deadline = start + args.budget_seconds
    chip, kind = this_chip()
    report = {'date': datetime.datetime.now(datetime.timezone.utc).isoformat(), 'backend': jax.default_backend(),
              'device_kind': kind, 'devices': jax.device_count(), 'chip': chip.name, 'chip_table': chip.describe(),
              'jax': jax.__version__, 'smoke': args.smoke,
              'auto_lifting': planned_lifting('auto', 2, chip)[0].kind}
    report['training'] = training(chip, args.smoke, deadline)
    report['neurons'] = neurons(chip, args.smoke, deadline)
    report['liftings'] = liftings(chip, args.smoke, deadline)
    torch_out = torch_steps(8 if args.smoke else 128, 2 if args.smoke else 20)
    for row in report['training']:
        if row.get('dtype') == 'bfloat16' and row.get('model') in torch_out:
            torch_out[row['model']]['memjax_over_torch'] = row['images_per_second'] / torch_out[row['model']][
                'images_per_second']
    report['torch'] = torch_out
    report['seconds'] = time.time() - start
    with open(args.out, 'w') as f:
        json.dump(report, f, indent=1, default=float)
    print(json.dumps({k: report[k] for k in ('backend', 'device_kind', 'chip', 'seconds')}))
    return report


if __name__ == '__main__':
    main()
