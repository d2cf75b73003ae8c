"""A plan: the rows of a config's programs on one accelerator, their totals, and what does not fit.

`make_plan(config, chip)` builds every Job (`memjax.plan.training`,
`memjax.plan.analyses`), compiles and costs each (`memjax.plan.programs.measure`)
and returns a `Plan`; `Plan.text()` is what `python -m memjax.plan` prints,
`Plan.to_dict()` its JSON.
"""

from __future__ import annotations

import dataclasses
import time

import jax

from memjax.plan.accelerators import GB, Accelerator, planned_lifting
from memjax.plan.analyses import analysis_jobs
from memjax.plan.programs import Row, measure
from memjax.plan.shapes import RunShape, run_shape
from memjax.plan.training import training_jobs


@dataclasses.dataclass
class Plan:
    """rows: one per program; chip: the accelerator; lifting/why: train.strategy resolved on it."""

    config_name: str
    chip: Accelerator
    shape: RunShape
    lifting: str
    why: str
    rows: list[Row]
    compile_seconds: float

    @property
    def backend(self) -> str:
        return jax.default_backend()

    @property
    def estimated_memory(self) -> bool:
        """Whether the memory figures come from another backend's compiler than the chip's."""
        return self.backend != {'gpu': 'gpu', 'tpu': 'tpu'}.get(self.chip.kind, 'cpu')

    @property
    def misfits(self) -> list[Row]:
        return [r for r in self.rows if not r.fits]

    def sections(self) -> dict[str, list[Row]]:
        out: dict[str, list[Row]] = {}
        for r in self.rows:
            out.setdefault(r.section, []).append(r)
        return out

    def totals(self) -> dict[str, dict]:
        """{section: {'seconds', 'flops', 'peak'}} and 'all'."""
        out = {}
        for section, rows in self.sections().items():
            out[section] = {'seconds': sum(r.seconds for r in rows), 'flops': sum(r.flops * r.iterations * r.calls
                                                                                   for r in rows),
                            'peak': max(r.memory for r in rows)}
        out['all'] = {'seconds': sum(v['seconds'] for v in out.values()),
                      'flops': sum(v['flops'] for v in out.values()),
                      'peak': max((v['peak'] for v in out.values()), default=0.0)}
        return out

    def to_dict(self) -> dict:
        return {'config': self.config_name, 'accelerator': self.chip.name, 'backend': self.backend,
                'memory_estimated': self.estimated_memory, 'lifting': self.lifting, 'why': self.why,
                'usable_bytes': self.chip.limit, 'rows': [r.to_dict() for r in self.rows], 'totals': self.totals(),
                'fits': not self.misfits, 'fixes': [r.fix for r in self.misfits]}

    def text(self) -> str:
        s, chip = self.shape, self.chip
        lines = [f'plan of {self.config_name} on {chip.describe()}',
                 f'run: {s.size} replicas of {s.model.name} ({s.settings.model.dtype}) on {s.settings.data.name} '
                 f'{"x".join(map(str, s.image_shape))}, {s.num_train} train / {s.num_val} val / {s.num_test} test, '
                 f'batch {s.settings.train.batch_size}, {s.settings.train.epochs} epochs; '
                 f'train.strategy={s.settings.train.strategy} -> {self.lifting} ({self.why})']
        if self.estimated_memory:
            lines.append(f'memory and cost figures: XLA:{self.backend.upper()}\'s compiler (this host), NOT the '
                         f'{chip.kind.upper()} compiler: estimates for the {chip.name}, not measurements '
                         '(fusion, layout and kernels differ)')
        else:
            lines.append(f'memory and cost figures: the {self.backend.upper()} compiler of this machine')
        lines.append('time: roofline max(FLOPs / peak, bytes / bandwidth) per call x calls; a lower bound')
        header = f'{"program":58} {"calls":>9} {"GFLOP/call":>11} {"GB moved":>9} {"peak GB":>8} {"time":>9}  fits'
        for section, rows in self.sections().items():
            lines += ['', f'[{section}]', header]
            for r in rows:
                lines.append(f'{r.name[:58]:58} {r.calls:>9} {r.flops * r.iterations / 1e9:>11.1f} '
                             f'{r.bytes * r.iterations / GB:>9.2f} {r.memory / GB:>8.2f} {_duration(r.seconds):>9}  '
                             f'{"yes" if r.fits else "NO"}')
                if r.count:
                    lines.append(f'    runs: {r.count}')
                if r.note:
                    lines.append(f'    note: {r.note}')
                if not r.fits:
                    lines.append(f'    does not fit {chip.limit / GB:.0f} GB usable; fix: {r.fix or "(none known)"}')
            t = self.totals()[section]
            lines.append(f'{"total " + section:58} {"":>9} {t["flops"] / 1e12:>9.0f} T {"":>9} {t["peak"] / GB:>8.2f} '
                         f'{_duration(t["seconds"]):>9}')
        t = self.totals()['all']
        lines += ['', f'whole config: {_duration(t["seconds"])} (roofline), {t["flops"] / 1e15:.1f} PFLOP, '
                      f'peak {t["peak"] / GB:.2f} GB of {chip.limit / GB:.0f} GB usable '
                      f'(compiled in {self.compile_seconds:.0f} s)']
        if self.misfits:
            lines.append('DOES NOT FIT: ' + '; '.join(f'{r.section} {r.name}: {r.fix}' for r in self.misfits))
        else:
            lines.append('every program fits')
        return '\n'.join(lines)


def _duration(seconds: float) -> str:
    if seconds < 1:
        return f'{seconds * 1e3:.1f} ms'
    if seconds < 120:
        return f'{seconds:.1f} s'
    if seconds < 7200:
        return f'{seconds / 60:.1f} min'
    return f'{seconds / 3600:.1f} h'


def make_plan(config, chip: Accelerator, config_name: str = '', only: tuple = (), log=lambda _: None) -> Plan:
    """The plan of `config` on `chip` (only: restrict to these sections, e.g. ('training',); empty: all)."""
    shape = run_shape(config)
    lifting, why = planned_lifting(shape.settings.train.strategy, shape.size, chip)
    start = time.time()
    jobs = (training_jobs(shape, lifting) if not only or 'training' in only else []) \
        + analysis_jobs(shape, chip, only)
    rows = []
    for job in jobs:
        log(f'  compiling {job.section}: {job.name}')
        rows.append(measure(job, chip))
    return Plan(config_name, chip, shape, lifting.kind, why, rows, time.time() - start)
