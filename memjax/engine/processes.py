"""The processes of one memjax job: one (today's default) or many, on JAX's multi-controller runtime.

Every process runs the same command (`python -m memjax.main ...` on every host
of a TPU pod slice, every task of a SLURM job, or several local CPU processes).
`start` joins them with `jax.distributed.initialize` (from the command line's
`--coordinator_address/--num_processes/--process_id`, or from the cluster
environment JAX detects: Cloud TPU, SLURM, ...); with neither, the job is one
process, as always.

With several processes:
- `jax.devices()` spans every process's devices; the `shard` lifting's replica
  axis spans them all (`memjax.engine.lifting`).
- Process 0 (`primary()`) owns the run directory's files; the others never
  write one (`memjax.rundir` asks `writes()`), and orbax checkpoints are written
  by all processes together.
- `together(phase)` ends a phase that can fail on bad input (config check, data
  load) on every process: each process posts 'ok' or its one-line error to the
  coordinator's key-value store and reads the others' (bounded by the
  timeout), so one process's bad input makes every process exit with a line
  naming it, before any collective. `barrier(name)` waits, bounded, for every
  process, and fails early when one has posted a failure (`fail`).
- A process that dies mid-run is detected by the coordinator's heartbeats
  (`--heartbeat_timeout`); JAX's runtime then stops the others, whose
  native log is reduced to one `memjax: error:` line (`quiet_native_errors`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

import jax
import numpy as np

from memjax.errors import MemjaxError

_STATE = {'timeout': 600.0, 'phase': 0, 'started': False}
_PREFIX = 'memjax/'


class ProcessError(MemjaxError):
    """Another process of the job failed or did not arrive in time (the message names it)."""

    def __init__(self, message: str, status: int = 2):
        super().__init__(message)
        self.status = status


def detected_cluster() -> str | None:
    """The name of the cluster environment `jax.distributed.initialize()` would detect, or None."""
    from jax._src import clusters
    for env in clusters.ClusterEnv._cluster_types:
        try:
            if not env.opt_in_only_method and env.is_env_present():
                return env.name if hasattr(env, 'name') else env.__name__
        except Exception:  # a detector that cannot tell: not this environment
            continue
    return None


def start(coordinator_address: str | None, num_processes: int | None, process_id: int | None,
          timeout: float = 600, heartbeat_timeout: int = 60) -> None:
    """Joins the job's processes (see the module doc); a no-op for a single process.

    timeout: seconds any wait for another process may take (start-up, barriers, phases);
    heartbeat_timeout: seconds after which a silent process counts as dead.
    """
    _STATE['timeout'] = float(timeout)
    given = (coordinator_address, num_processes, process_id)
    if all(value is None for value in given):
        if detected_cluster() is None:
            return
    elif None in given and detected_cluster() is None:
        raise ProcessError('--coordinator_address, --num_processes and --process_id go together (no cluster '
                           'environment to detect the others from); give all three, e.g. '
                           '--coordinator_address=localhost:1234 --num_processes=2 --process_id=0')
    if num_processes is not None and num_processes < 1 or process_id is not None and not (
            0 <= process_id < (num_processes or 1 << 30)):
        raise ProcessError(f'--process_id={process_id} must be in [0, --num_processes={num_processes})')
    if num_processes == 1 and coordinator_address is None:
        return
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')  # CPU processes reduce over TCP
    try:
        jax.distributed.initialize(coordinator_address, num_processes, process_id,
                                   initialization_timeout=int(timeout), heartbeat_timeout_seconds=int(heartbeat_timeout),
                                   shutdown_timeout_seconds=int(min(timeout, 30)))
    except Exception as error:  # unreachable coordinator, timeout, bad address
        raise ProcessError(f'could not join the job at --coordinator_address={coordinator_address} as process '
                           f'{process_id} of {num_processes} within {int(timeout)} s ({str(error).splitlines()[0][:160]})'
                           '; start every process with the same address and count') from None
    _STATE['started'] = True


def count() -> int:
    return jax.process_count()


def index() -> int:
    return jax.process_index()


def several() -> bool:
    return _STATE['started'] and jax.process_count() > 1


def primary() -> bool:
    """Whether this process owns the run directory's files (process 0, or the only one)."""
    return jax.process_index() == 0


def writes() -> bool:
    """Whether this process writes memjax's own files (metadata, metrics, status, results)."""
    return primary()


def _client():
    from jax._src.distributed import global_state
    return global_state.client


def _key(*parts: Any) -> str:
    return _PREFIX + '/'.join(str(p) for p in parts)


def fail(message: str, status: int = 2, wait: float = 10.0) -> None:
    """Posts this process's failure for the others (they stop at their next `together`/`barrier`).

    Process 0 hosts the coordinator: it waits (at most `wait` s) until every other process has failed too
    or has seen the failure, so that none of them loses the coordinator before reading the line to print.
    `together` waits up to the job's --process_timeout: before any collective every process reaches the
    phase's end within it (a slow one on a loaded machine too); mid-run another process may be inside a
    collective that never returns, so the wait is short.
    """
    if not several():
        return
    try:
        client = _client()
        client.key_value_set(_key('failed', index()), f'{status}\t{message}')
        if index() != 0:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            told = {int(k.rsplit('/', 1)[1]) for kind in ('failed', 'seen')
                    for k, _ in client.key_value_dir_get(_key(kind) + '/')}
            if told >= set(range(count())):
                return
            time.sleep(0.05)
    except Exception:
        pass


def _failure(skip: int | None = None) -> tuple[int, int, str] | None:
    """(process, status, message) of a process that posted a failure, if any."""
    try:
        entries = _client().key_value_dir_get(_key('failed') + '/')
    except Exception:
        return None
    for key, value in sorted(entries):
        process = int(key.rsplit('/', 1)[1])
        if process != skip:
            status, message = value.split('\t', 1)
            return process, int(status), message
    return None


def barrier(name: str, timeout: float | None = None) -> None:
    """Waits (bounded) until every process arrives; raises ProcessError naming a process that failed
    or did not arrive in time."""
    if not several():
        return
    timeout = _STATE['timeout'] if timeout is None else timeout
    _STATE['phase'] += 1
    name = f"{_STATE['phase']}-{name}"
    client = _client()
    client.key_value_set(_key('at', name, index()), '1')
    deadline = time.monotonic() + timeout
    while True:
        arrived = {int(k.rsplit('/', 1)[1]) for k, _ in client.key_value_dir_get(_key('at', name) + '/')}
        if len(arrived) == count():
            return
        failed = _failure(skip=index())
        if failed is not None:
            process, status, message = failed
            try:  # process 0 waits for this before it takes the coordinator down
                client.key_value_set(_key('seen', index()), '1')
            except Exception:
                pass
            raise ProcessError(f'process {process} failed: {message}', status)
        if time.monotonic() > deadline:
            missing = sorted(set(range(count())) - arrived)
            raise ProcessError(f"process {', '.join(map(str, missing))} did not reach '{name.split('-', 1)[1]}' "
                               f'within {int(timeout)} s (--process_timeout); check its log and rerun every process')
        time.sleep(0.05)


class together:
    """`with together('checking the config'):` -- the block's MemjaxError on any process stops all of them
    at the block's end, each with one line naming the failing process (see the module doc)."""

    def __init__(self, phase: str):
        self.phase = phase

    def __enter__(self):
        return self

    def __exit__(self, kind, error, trace):
        if not several():
            return False
        if error is not None:
            status = getattr(error, 'status', 2)
            fail(str(error) if isinstance(error, MemjaxError) else f'{type(error).__name__}: {error}', status,
                 wait=_STATE['timeout'])
            return False
        barrier(self.phase)
        return False


def host(tree: Any) -> Any:
    """Values as NumPy arrays on every process (gathered from all processes when they span several)."""
    from jax.experimental import multihost_utils

    def one(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(x)
    return jax.tree_util.tree_map(one, tree)


_NATIVE_FILTER = r'''
import re, sys
native = re.compile(r"^([EFWI]\d{4} \d\d:\d\d|\s*@\s+0x|\*\*\* |\[Gloo\]|terminate called|\s*what\(\):|Additional GRPC|:UNKNOWN:|The tasks have crashed|Fatal Python|Current thread|Thread 0x|  File |Extension modules)")
reported = False
for line in sys.stdin:
    if 'Terminating process because the JAX distributed service' in line and not reported:
        reported = True
        sys.stderr.write("memjax: error: process " + sys.argv[1] + ": another process of this job stopped or "
                         "became unreachable (JAX's distributed service reported it); rerun every process "
                         "with the same command to resume\n")
    elif not native.match(line) and not reported:
        sys.stderr.write(line)
        reported = line.startswith('memjax: error:')  # the one line: what the runtime adds after it is noise
    sys.stderr.flush()
'''


def quiet_native_errors() -> None:
    """Routes this process's stderr through a small filter process that drops the native runtime's logs
    (gloo, coordination service, the abort's stack trace) and turns the runtime's fatal 'another task
    died' into one `memjax: error:` line. Only with several processes and not --verbosity=debug."""
    sys.stderr.flush()
    filter_process = subprocess.Popen([sys.executable, '-c', _NATIVE_FILTER, str(index())],
                                      stdin=subprocess.PIPE, stdout=None, stderr=None, close_fds=True)
    os.dup2(filter_process.stdin.fileno(), 2)
    filter_process.stdin.close()
