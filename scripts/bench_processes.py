"""Correctness check, not a speed claim: one job of 2 local CPU processes (2 forced devices each, gloo)
against 1 process with 4 devices, the same tiny 4-replica run (training and rewinding), timed side by side.

    python scripts/bench_processes.py [--out=benchmarks/processes_cpu.json]

Both runs write a run directory under a temporary folder; the script checks that the final parameters
are equal and writes the wall times (whole commands: start-up and compilation included) and their ratio.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = '''import sys
sys.path.insert(0, {tests!r})
from helpers import tiny_config
def get_config():
    return tiny_config(**{overrides!r})
'''
OVERRIDES = {'train.epochs': 3, 'noise.ratios': (0.0, 0.5), 'seeds': (0, 1), 'train.strategy': 'shard',
             'analyses': ('rewinding',), 'analysis.rewinding.num_train': 32, 'analysis.rewinding.num_test': 16,
             'analysis.rewinding.last_k': False}


def command(config: str, workdir: str, extra=()) -> list[str]:
    return [sys.executable, '-m', 'memjax.main', f'--config={config}', f'--workdir={workdir}', *extra]


def timed(commands: list[list[str]], devices: int) -> float:
    env = dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}')
    started = time.perf_counter()
    children = [subprocess.Popen(c, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                 text=True) for c in commands]
    for child in children:
        _, err = child.communicate(timeout=900)
        if child.returncode:
            raise SystemExit(err)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument('--out', default=os.path.join(ROOT, 'benchmarks', 'processes_cpu.json'))
    args = parser.parse_args()
    sys.path.insert(0, ROOT)
    from memjax.run import open_run
    with tempfile.TemporaryDirectory() as tmp:
        config = os.path.join(tmp, 'config.py')
        with open(config, 'w') as f:
            f.write(CONFIG.format(tests=os.path.join(ROOT, 'tests'), overrides=OVERRIDES))
        one = timed([command(config, os.path.join(tmp, 'one'))], devices=4)
        with socket.socket() as s:
            s.bind(('localhost', 0))
            port = s.getsockname()[1]
        two = timed([command(config, os.path.join(tmp, 'two'), [f'--coordinator_address=localhost:{port}',
                                                                 '--num_processes=2', f'--process_id={i}'])
                     for i in range(2)], devices=2)
        a, b = (open_run(os.path.join(tmp, name)) for name in ('one', 'two'))
        fa, fb = (r.checkpoints.load_epoch(r.final_epoch()) for r in (a, b))
        import jax
        equal = all(jax.tree_util.tree_leaves(jax.tree_util.tree_map(np.array_equal, fa, fb)))
    record = {'date': datetime.date.today().isoformat(), 'machine': f'{os.cpu_count()}-core {platform.machine()}',
              'load_average': os.getloadavg(), 'one_process_4_devices_s': round(one, 1),
              'two_processes_2_devices_s': round(two, 1), 'ratio_two_over_one': round(two / one, 2),
              'final_parameters_equal': bool(equal), 'overrides': {k: list(v) if isinstance(v, tuple) else v
                                                                   for k, v in OVERRIDES.items()}}
    with open(args.out, 'w') as f:
        json.dump(record, f, indent=2)
    print(json.dumps(record, indent=2))


if __name__ == '__main__':
    main()
