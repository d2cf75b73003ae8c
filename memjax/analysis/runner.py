"""Runs the analyses a config lists (`config.analyses`) on a trained run.

In a job of several processes every process runs every analysis (an analysis
with `ACROSS_PROCESSES = True` spreads its models over all processes' devices,
the others are computed whole by each process on its own devices); process 0
alone commits, the others write into a private temporary folder that is
removed, and all meet at a barrier after each commit.

Each analysis writes into a fresh temporary folder; when it completes, its
figures move into figures/ and the folder is renamed to results/<name>/ with a
`complete.json` inside. A kill midway leaves no results/<name>/ that looks
finished: a results folder without complete.json (from an older memjax) or a
leftover temporary folder is redone by the next run. complete.json records the
settings of every key the analysis read and the epochs the run kept (a rerun
skips an analysis whose record matches and redoes one whose settings changed),
`analysis_dtype` (always float32: `memjax.run.ANALYSIS_DTYPE`) and the
`training_dtype` of the run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time
from typing import Callable

from memjax.analysis.registry import analysis, build_settings, check_data
from memjax.analysis.settings import Context
from memjax.engine import processes
from memjax.run import open_run
from memjax.errors import ConfigError
from memjax.rundir import read_json, write_json

COMPLETE = 'complete.json'


def analysis_record(run, name: str, settings: dict) -> dict:
    """What an analysis's results depend on besides the trained run: the settings of every key it reads
    and the epochs the run kept (JSON-normalised, so a stored record compares equal)."""
    found = analysis(name)
    keys = (found.settings_key, *found.uses)
    record = {'settings': {key: dataclasses.asdict(settings[key]) for key in keys},
              'epochs': run.epochs(), 'analysis_dtype': run.analysis_dtype}
    return json.loads(json.dumps(record))


def is_complete(workdir: str, name: str) -> bool:
    """Whether results/<name>/ was written by a completed analysis."""
    return os.path.exists(os.path.join(workdir, 'results', name, COMPLETE))


def why_redo(workdir: str, name: str, record: dict) -> str | None:
    """None when results/<name>/ is complete and was made with `record`; else the reason to (re)do it."""
    path = os.path.join(workdir, 'results', name, COMPLETE)
    if not os.path.exists(path):
        return 'not done yet'
    stored = read_json(path)
    if 'settings' not in stored:
        return 'its results predate settings records'
    changed = [f'analysis.{key}.{field} {old!r} -> {record["settings"][key].get(field)!r}'
               for key, fields in stored['settings'].items() if key in record['settings']
               for field, old in fields.items() if record['settings'][key].get(field) != old]
    changed += [f'analysis.{key}.{field} (new)' for key, fields in record['settings'].items()
                for field in fields if field not in stored['settings'].get(key, {})]
    if changed:
        return 'settings changed: ' + '; '.join(changed[:3]) + (' ...' if len(changed) > 3 else '')
    if stored.get('epochs') != record['epochs']:
        return f"the run's kept epochs changed ({stored.get('epochs')} -> {record['epochs']})"
    return None


def _commit(run, name: str, output: str, figures: str, started: float, record: dict) -> None:
    run_dir = run.directory
    final_figures = run_dir.figures_dir
    for file in sorted(os.listdir(figures)):
        os.replace(os.path.join(figures, file), os.path.join(final_figures, file))
    write_json(os.path.join(output, COMPLETE), {'analysis': name, 'seconds': round(time.time() - started, 1),
                                                'training_dtype': str(run.config.model.dtype),
                                                'figures': sorted(os.listdir(final_figures)), **record})
    target = os.path.join(run_dir.path, 'results', name)
    if os.path.exists(target):
        shutil.rmtree(target)
    os.replace(output, target)
    shutil.rmtree(figures, ignore_errors=True)


def check_rerun(rerun, listed) -> tuple[str, ...]:
    """The analyses `--rerun` names ('all' for every listed one); one error line for a name not listed."""
    names = tuple(name for item in (rerun or ()) for name in str(item).split(',') if name)
    if 'all' in names:
        return tuple(listed)
    for name in names:
        if name not in listed:
            raise ConfigError(f"--rerun={name} names an analysis that config.analyses does not list "
                              f"({', '.join(listed) or 'none'}); name one of them, or all")
    return names


def run_analyses(config, workdir: str, log: Callable[[str], None] = print, settings: dict | None = None,
                 rerun=()) -> None:
    """Runs the analyses of `config.analyses`, in order, on the run in `workdir`.

    An analysis whose results are complete and were made with the same settings and kept epochs
    is skipped (logged); one whose settings changed is redone (the log says which changed).
    `rerun`: analysis names (or 'all') to redo regardless. `settings` are the validated settings
    from `build_settings` (built here if None).
    """
    settings = build_settings(config) if settings is None else settings
    forced = check_rerun(rerun, tuple(config.analyses))
    if not config.analyses:
        return
    run = open_run(workdir)
    run.verify()
    for value in settings.values():  # before any analysis works
        value.check_workdir(workdir, config)
    check_data(settings, run.data_facts())
    context = Context(listed=tuple(config.analyses), shared=settings, log=log, strategy=config.train.strategy)
    scratch = os.path.join(run.directory.path, 'results', '.partial')
    skipped = []
    private = None if processes.primary() else tempfile.mkdtemp(prefix='memjax-process-')
    for name in config.analyses:
        found = analysis(name)
        record = analysis_record(run, name, settings)
        reason = 'forced by --rerun' if name in forced else why_redo(run.directory.path, name, record)
        if reason is None:
            skipped.append(name)
            continue
        if reason != 'not done yet':
            log(f'{name}: redoing ({reason})')
        folder = scratch if private is None else private  # the other processes of a job write nothing shared
        output, figures = os.path.join(folder, name), os.path.join(folder, name + '.figures')
        for path in (output, figures):
            shutil.rmtree(path, ignore_errors=True)
            os.makedirs(path)
        context.output, context.figures = output, figures
        context.across_processes = bool(getattr(found.module, 'ACROSS_PROCESSES', False))
        started = time.time()
        found.module.run(run, settings[found.settings_key], context)
        if private is None:
            _commit(run, name, output, figures, started, record)
        processes.barrier(f'committing {name}')
    if skipped:
        log(f"skipped (done with these settings; --rerun=NAME or --rerun=all redoes): {', '.join(skipped)}")
    shutil.rmtree(scratch if private is None else private, ignore_errors=True)
