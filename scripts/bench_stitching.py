"""Wall time of the full stitching sweep: all stitches of a point trained together (vmap)
against one stitch at a time (loop), on the same run, in one process.

The run: P2's SVHN setting in shape (the CNN on 32x32x3 synthetic images,
clean + 7 noisy replicas r = 5 ... 50%), trained for one epoch (the timing does
not depend on how well the models fit). The sweep: every stitch point, both
directions, all 7 noisy replicas, S trained on the validation split, every
stitched model evaluated on the training and test sets. Wall time includes
compilation, as a user sees it.

    python scripts/bench_stitching.py [--model=cnn] [--epochs=2] [--out=bench_stitching.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import tempfile
import time

import jax

from memjax.analysis.runner import run_analyses
from memjax.experiment import base_config
from memjax.train.loop import train


def make_run(workdir: str, model: str, width: int | None) -> None:
    c = base_config()
    c.data.source = 'synthetic'
    c.data.num_train = 2048
    c.data.val_size = 1024
    c.data.num_test = 1024
    c.data.image_shape = (32, 32, 3)
    c.noise.ratios = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.375, 0.5)
    c.model.name = model
    c.model.width = width
    c.train.epochs = 1
    c.train.strategy = 'loop'
    c.checkpoint.async_save = False
    train(c, workdir, log=lambda _: None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--model', default='cnn')
    parser.add_argument('--width', type=int, default=None)
    parser.add_argument('--epochs', type=int, default=2, help='epochs of S training per stitch')
    parser.add_argument('--strategies', default='vmap,loop')
    parser.add_argument('--out', default='bench_stitching.json')
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = os.path.join(tmp, 'run')
        make_run(workdir, args.model, args.width)
        timings = {}
        for strategy in args.strategies.split(','):
            config = base_config()
            config.analyses = ('stitching',)
            config.analysis.stitching.epochs = args.epochs
            config.train.strategy = strategy  # the lifting the analysis uses for its stitches
            start = time.perf_counter()
            run_analyses(config, workdir, log=lambda _: None, rerun=('all',))
            timings[strategy] = time.perf_counter() - start
            print(f'{strategy}: {timings[strategy]:.1f} s', flush=True)
    result = {'date': datetime.date.today().isoformat(), 'backend': jax.default_backend(),
              'device': jax.devices()[0].device_kind, 'model': args.model, 'noisy_replicas': 7,
              'stitch_epochs': args.epochs, 'seconds': timings}
    if {'vmap', 'loop'} <= set(timings):
        result['loop_over_vmap'] = timings['loop'] / timings['vmap']
        print(f"one at a time / batched = {result['loop_over_vmap']:.2f}x")
    with open(args.out, 'w') as f:
        json.dump(result, f, indent=2)


if __name__ == '__main__':
    main()
