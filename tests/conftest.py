"""Shared test set-up: CPU only, tiny synthetic runs.

XLA compilation dominates this suite on a 2-core CPU. Setting
MEMJAX_TEST_JAX_CACHE=<dir> turns on JAX's persistent compilation cache there,
for this process and the subprocesses the CLI and notebook tests start (they
inherit the environment): a rerun with a warm cache is several times faster
(tests/p3_analyses_test.py: 114 s cold, 30 s warm). It is off by default
because a cold cache only adds writes (the same file: 133 s).
"""

import os
import sys

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
if os.environ.get('MEMJAX_TEST_JAX_CACHE'):
    os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', os.environ['MEMJAX_TEST_JAX_CACHE'])
    os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
    os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')
sys.path.insert(0, os.path.dirname(__file__))
