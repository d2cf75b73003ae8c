"""One program of a plan: how it is built from shapes, compiled ahead of time, and costed.

A `Job` names a program a config will run, how often (`calls`, and `count`
in words), and how to compile it from abstract inputs (`jax.ShapeDtypeStruct`):
`compile()` returns the compiled program (`jax.stages.Compiled`), or (it,
{field: value}) when compiling decides something the row must say (the
neuron search's `parallel`). `measure` turns it into a `Row`:

- FLOPs and bytes accessed: `compiled.cost_analysis()` (per call; XLA counts
  a loop's body once, so a program with a loop of `iterations` iterations has
  its time multiplied by them);
- memory: `compiled.memory_analysis()`, arguments + outputs + temporaries -
  aliased (`memjax.analysis.localization.neuron_memory.program_bytes`), plus
  `resident`, what the analysis holds on the device beside it (e.g. other
  models' CKA Grams). For a TPU the temporaries are scaled by `layout`, the
  padding of the model's activations to XLA:TPU's 128-lane tiles;
- time: a roofline, max(FLOPs / peak FLOP/s, bytes / bandwidth) per call,
  x iterations x calls;
- whether it fits the chip's usable memory.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

from memjax.analysis.localization.neuron_memory import program_bytes
from memjax.engine.compiled import compile_once
from memjax.plan.accelerators import Accelerator

LANES = 128  # XLA:TPU tiles an array's minor dimension to multiples of 128 lanes


@dataclasses.dataclass(frozen=True)
class Job:
    """A program of the config, before compilation (see the module doc).

    Attributes:
      section: 'training' or the analysis that runs it.
      name: the program, in words (its lifting and batch).
      compile: () -> Compiled, or (Compiled, {Row field: value}); None: not costed.
      calls: how many times it runs (at most: replicas stop early, searches end when every example flipped).
      count: how `calls` is made up, in words.
      dtype: its compute dtype ('bfloat16' or 'float32': which peak rate applies).
      iterations: a loop inside it that XLA's cost analysis counts once.
      resident: bytes the analysis holds on the device while it runs, besides the program's own.
      layout: the factor its temporaries grow by on a TPU (`tpu_layout`).
      fix: what to change if it does not fit.
      note: anything the row's reader must know.
    """

    section: str
    name: str
    compile: Callable[[], Any]
    calls: int
    count: str
    dtype: str = 'float32'
    iterations: int = 1
    resident: float = 0.0
    layout: float = 1.0
    fix: str = ''
    note: str = ''


@dataclasses.dataclass
class Row:
    """A measured program: per call `flops`, `bytes` accessed, `memory` (program + resident, bytes);
    `seconds` in all (roofline); `fits` the chip's usable memory."""

    section: str
    name: str
    calls: int
    count: str
    dtype: str
    flops: float
    bytes: float
    memory: float
    resident: float
    iterations: int
    seconds: float
    fits: bool
    fix: str = ''
    note: str = ''

    @property
    def seconds_per_call(self) -> float:
        return self.seconds / max(self.calls, 1)

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), 'seconds_per_call': self.seconds_per_call}


def jit_compile(key: Any, fn: Callable, *specs) -> Any:
    """`fn` (plain or already jitted) compiled for abstract `specs`, once per process for `key` and shapes."""
    return compile_once(('memjax.plan', key), fn, *specs)


def cost(compiled) -> tuple[float, float]:
    """(FLOPs, bytes accessed) of one call, from XLA's cost analysis (a dict, or a list of one in older jax)."""
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else {}
    analysis = analysis or {}
    return float(analysis.get('flops', 0.0)), float(analysis.get('bytes accessed', 0.0))


def memory(compiled, layout: float = 1.0) -> float:
    """Bytes the compiled program needs, its temporaries scaled by `layout`."""
    stats = compiled.memory_analysis()
    if stats is None:
        return float(program_bytes(compiled) or 0)
    return float(stats.argument_size_in_bytes + stats.output_size_in_bytes
                 + layout * stats.temp_size_in_bytes - stats.alias_size_in_bytes)


def roofline(flops: float, accessed: float, chip: Accelerator, dtype: str) -> float:
    """Seconds of one pass: max(FLOPs / peak, bytes / bandwidth)."""
    return max(flops / chip.peak(dtype), accessed / chip.bandwidth)


def measure(job: Job, chip: Accelerator) -> Row:
    """Compiles the job and costs it on `chip` (see the module doc); a job without a program: an empty row."""
    if job.compile is None:
        return Row(job.section, job.name, 0, job.count, job.dtype, 0.0, 0.0, 0.0, 0.0, 1, 0.0, True, note=job.note)
    out = job.compile()
    compiled, overrides = out if isinstance(out, tuple) else (out, {})
    flops, accessed = cost(compiled)
    layout = job.layout if chip.kind == 'tpu' else 1.0
    need = memory(compiled, layout) + job.resident
    per_call = roofline(flops, accessed, chip, job.dtype) * job.iterations
    fields = dict(section=job.section, name=job.name, calls=job.calls, count=job.count, dtype=job.dtype,
                  flops=flops, bytes=accessed, memory=need, resident=job.resident, iterations=job.iterations,
                  seconds=per_call * job.calls, fits=need <= chip.limit, fix=job.fix, note=job.note)
    fields.update(overrides)
    if 'calls' in overrides and 'seconds' not in overrides:
        fields['seconds'] = per_call * fields['calls']
    return Row(**fields)


def tpu_layout(model, image_shape: tuple) -> float:
    """How much larger a model's activations are on a TPU: its stage outputs' sizes with their minor
    (channel) dimension padded to a multiple of 128 lanes, over their sizes (1.0 when every width is a
    multiple of 128; e.g. ResNet-9's 64-channel stem doubles). An estimate of XLA:TPU's tiled layout for
    the temporaries, which are mostly activations; the real layout is the TPU compiler's."""
    shapes = list(model.stage_output_shapes(image_shape).values())
    size = sum(math.prod(s) for s in shapes)
    padded = sum(math.prod(s[:-1]) * math.ceil(s[-1] / LANES) * LANES for s in shapes)
    return padded / size
