"""Shared test set-up: CPU only, tiny synthetic runs.

XLA compilation dominates this suite on a 2-core CPU, and many tests compile
the same tiny programs (the same model, step and predict functions built in
different closures). JAX's persistent compilation cache keys programs by their
HLO, so one compilation serves every later identical program, in this process
and in the subprocesses the CLI and notebook tests start (they inherit the
environment). The cache lives in a fresh directory per pytest session unless
MEMJAX_TEST_JAX_CACHE names one.
"""

import os
import sys
import tempfile

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
    os.environ['JAX_COMPILATION_CACHE_DIR'] = (os.environ.get('MEMJAX_TEST_JAX_CACHE')
                                               or tempfile.mkdtemp(prefix='memjax-test-jax-cache-'))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')
sys.path.insert(0, os.path.dirname(__file__))
