"""A second identical training in one process reuses the first's compiled programs: their times side by side.

Trains the same config twice, into two fresh work directories, in this one
process, and prints each training's wall time and their ratio (second /
first). Everything the second run would compile (the training step, the
evaluation, the initialisation) is a program of the replica engine
(`memjax.engine.lifting`) keyed by value, so it is found in the process's
cache instead of being compiled again.

    python scripts/bench_program_reuse.py [--config=configs/default.py] [--epochs=2] [--out=result.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import tempfile
import time

import jax

from memjax.engine.lifting import cache_size
from memjax.notebook import load_config
from memjax.train.loop import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--config', default='configs/default.py')
    parser.add_argument('--epochs', type=int, default=2)
    parser.add_argument('--out', default=None)
    args = parser.parse_args()
    config = load_config(args.config, overrides={'train.epochs': args.epochs, 'train.stop_accuracy': None})
    times, programs = [], []
    with tempfile.TemporaryDirectory() as root:
        for name in ('first', 'second'):
            start = time.perf_counter()
            train(config, os.path.join(root, name), log=lambda _: None)
            times.append(time.perf_counter() - start)
            programs.append(cache_size())
    result = {'config': args.config, 'epochs': args.epochs, 'first_s': round(times[0], 2),
              'second_s': round(times[1], 2), 'ratio': round(times[1] / times[0], 3),
              'lifted_programs_after_first': programs[0], 'lifted_programs_after_second': programs[1],
              'backend': jax.default_backend(), 'machine': f'{platform.machine()}, {os.cpu_count()} cores',
              'date': datetime.date.today().isoformat()}
    print(f"first training {result['first_s']:.1f} s, second {result['second_s']:.1f} s: ratio "
          f"{result['ratio']:.2f} (lifted programs {programs[0]} -> {programs[1]})")
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(result, f, indent=2)


if __name__ == '__main__':
    main()
