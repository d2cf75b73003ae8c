"""Shared test set-up: CPU only, tiny synthetic runs.

XLA compilation dominates this suite on a 2-core CPU, and the tests' models
are tiny, so:
- XLA compiles them with LLVM's optimisation off (TEST_XLA_FLAGS, added to
  XLA_FLAGS for this process and the subprocesses it starts). The programs
  compute the same functions; the suite takes about 1.6x less time (sum of the
  test durations 2,079 s -> 1,314 s). MEMJAX_TEST_XLA_FLAGS='' compiles with
  XLA's defaults instead.
- MEMJAX_TEST_JAX_CACHE=<dir> turns on JAX's persistent compilation cache
  there, for this process and the subprocesses the CLI, several-process and
  notebook tests start (they inherit the environment): the pytest workers and
  those processes then compile each program once between them.
  `scripts/run_tests.sh` gives each run a new, empty one (two workers, from
  cold: 688 s -> 640 s); a rerun with a warm cache is several times faster.
- The two workers take whole files, longest first (BY_TIME; `scripts/run_tests.sh`
  keeps this order with --no-loadscope-reorder), so that they finish together
  instead of one waiting for the other's last long file (33 s of 697 s before).
"""

import os
import sys

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
TEST_XLA_FLAGS = os.environ.get('MEMJAX_TEST_XLA_FLAGS',
                                '--xla_backend_optimization_level=0')
os.environ['XLA_FLAGS'] = ' '.join(f for f in (os.environ.get('XLA_FLAGS', ''), TEST_XLA_FLAGS) if f)
if os.environ.get('MEMJAX_TEST_JAX_CACHE'):
    os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', os.environ['MEMJAX_TEST_JAX_CACHE'])
    os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
    os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')
sys.path.insert(0, os.path.dirname(__file__))

# Test files by their measured time on the 2-core machine, longest first (2026-12-06, seconds in all:
# 128, 126, 105, 103, 76, 68, 67, 59, 57, 53, 46, 44, 42, 41, 41, 35, 33, 31, 31, 30, 23, 22, 22, 17, 15, 15,
# 10, 7, 4, ...). A file not listed runs first (its time is not known yet).
BY_TIME = ('notebooks', 'main', 'multihost', 'rundir', 'models', 'dissection', 'plan', 'p4_analyses', 'meaning',
           'cka_layers', 'stitching', 'p3_analyses', 'neurons', 'train', 'layer_api', 'vit', 'p3_fidelity',
           'filesystem', 'device_check', 'lifting', 'gradients', 'p4_training', 'cka_analyses', 'cka',
           'manifolds', 'mftma', 'fidelity', 'weight_change', 'resnet32', 'configs', 'pipeline', 'schedules',
           'architecture', 'startup_checks', 'notebook_helpers', 'raw_files', 'tfds_source', 'dataset', 'noise')


def pytest_collection_modifyitems(config, items):
    rank = {f'{name}_test.py': i for i, name in enumerate(BY_TIME)}
    items.sort(key=lambda item: rank.get(os.path.basename(str(item.fspath)), -1))  # stable: in-file order kept
