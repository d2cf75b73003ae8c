"""How many examples the critical-neuron search runs at once: chosen from the device's memory.

One step of the search (`memjax.analysis.localization.neurons`) is vmapped over
E examples; each example runs `noise_copies` x (1 + reference_batch) forward
and backward passes (P3's setting: 5 x 513 images of ResNet-9, several GB),
so E is bounded by the accelerator's memory: a handful on a 16 GB TPU v5e,
tens on an 80 GB H100. `fit_parallel` compiles the step for a given E and
reads the compiled program's memory (XLA's memory analysis: arguments +
outputs + temporaries - aliased) against the budget:

- the budget: `memory_budget_gb` if given, else 90% of the device memory not
  yet in use (`device.memory_stats()['bytes_limit'] - ['bytes_in_use']`), or
  on a device without memory statistics (the CPU) half the host memory now
  available (MemAvailable: other processes' memory is not ours to take);
- `parallel=None`: E from the memory of E = 1 and E = 2 (linear in E), at most
  the number of examples and AUTO_CAP, halved until the compiled program
  fits; the choice is logged. If the device still runs out of memory
  (RESOURCE_EXHAUSTED), the search halves E and redoes the chunk;
- an explicit `parallel` is used as given, or refused with one line when its
  program needs more than the budget.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import jax

from memjax.errors import ConfigError

AUTO_CAP = 256          # at most this many examples at once when parallel=None
DEVICE_FRACTION = 0.9   # of the device memory not in use
HOST_FRACTION = 0.5     # of the available host memory, on a device without memory statistics


def memory_budget(gigabytes: float | None = None) -> int:
    """Bytes one compiled search program may use (see the module doc)."""
    if gigabytes is not None:
        return int(gigabytes * 2 ** 30)
    try:
        stats = jax.local_devices()[0].memory_stats()
    except Exception:  # backends without memory statistics
        stats = None
    if stats and stats.get('bytes_limit'):
        return int(DEVICE_FRACTION * (stats['bytes_limit'] - stats.get('bytes_in_use', 0)))
    return int(HOST_FRACTION * available_host_memory())


def available_host_memory() -> int:
    """Bytes of host memory available now (Linux MemAvailable; else the free pages)."""
    try:
        with open('/proc/meminfo') as f:
            for line in f:
                if line.startswith('MemAvailable:'):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_AVPHYS_PAGES')


def program_bytes(compiled) -> int | None:
    """Device memory a compiled program needs (None when the backend gives no memory analysis)."""
    try:
        m = compiled.memory_analysis()
    except Exception:
        return None
    if m is None:
        return None
    return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes)


def _gb(n: int) -> str:
    return f'{n / 2 ** 30:.3g} GB'


def fit_parallel(compile_at: Callable[[int], Any], requested: int | None, cap: int, budget: int, what: str,
                 log: Callable[[str], None] = lambda _: None) -> tuple[int, Any]:
    """(E, the program compiled for E): E = `requested`, checked, or the largest that fits (`parallel=None`).

    Args:
      compile_at: E -> the compiled program for E examples at once.
      requested: analysis.neurons.parallel (None: choose).
      cap: the most examples worth running at once (the number of examples).
      budget: bytes (`memory_budget`).
      what: the program's name in messages.

    Raises:
      ConfigError: the requested E, or a single example, needs more than the budget.
    """
    compiled_for: dict[int, Any] = {}

    def compiled_at(e: int):
        if e not in compiled_for:
            compiled_for[e] = compile_at(e)
        return compiled_for[e]

    if requested is not None:
        compiled = compiled_at(requested)
        need = program_bytes(compiled)
        if need is not None and need > budget:
            raise ConfigError(f'analysis.neurons.parallel={requested}: one {what} step needs {_gb(need)}, more than '
                              f'the {_gb(budget)} available; lower it, or set it to None to choose from the memory')
        return requested, compiled
    cap = max(1, min(cap, AUTO_CAP))
    e = cap
    if cap > 2:
        one, two = program_bytes(compiled_at(1)), program_bytes(compiled_at(2))
        if one is not None and two is not None:
            per = max(two - one, 1)
            e = max(1, min(cap, (budget - (one - per)) // per))
    while True:
        compiled = compiled_at(e)
        need = program_bytes(compiled)
        if need is None or need <= budget:
            log(f'  neurons: {what} runs {e} example(s) at once ('
                + (f'{_gb(need)} of the {_gb(budget)} available)' if need is not None
                   else 'no memory analysis on this backend)'))
            return e, compiled
        if e == 1:
            raise ConfigError(f'one example of the {what} needs {_gb(need)}, more than the {_gb(budget)} available; '
                              'lower analysis.neurons.reference_batch or .noise_copies, or raise '
                              '.memory_budget_gb if the device has more free')
        e = max(1, e // 2)


def out_of_memory(error: Exception) -> bool:
    """Whether a runtime error is the device running out of memory."""
    return 'RESOURCE_EXHAUSTED' in str(error)
