"""Runs the analyses a config lists (`config.analyses`) on a trained run.

Each analysis writes into a fresh temporary folder; when it completes, its
figures move into figures/ and the folder is renamed to results/<name>/ with a
`complete.json` inside. A kill midway leaves no results/<name>/ that looks
finished: a results folder without complete.json (from an older memjax) or a
leftover temporary folder is redone by the next run. complete.json also
records `analysis_dtype` (always float32: `memjax.run.ANALYSIS_DTYPE`) and the
`training_dtype` of the run.
"""

from __future__ import annotations

import os
import shutil
import time
from typing import Callable

from memjax.analysis.registry import analyses, build_settings
from memjax.analysis.settings import Context
from memjax.run import open_run
from memjax.rundir import write_json

COMPLETE = 'complete.json'


def is_complete(workdir: str, name: str) -> bool:
    """Whether results/<name>/ was written by a completed analysis."""
    return os.path.exists(os.path.join(workdir, 'results', name, COMPLETE))


def _commit(run, name: str, output: str, figures: str, started: float) -> None:
    run_dir = run.directory
    final_figures = run_dir.figures_dir
    for file in sorted(os.listdir(figures)):
        os.replace(os.path.join(figures, file), os.path.join(final_figures, file))
    write_json(os.path.join(output, COMPLETE), {'analysis': name, 'seconds': round(time.time() - started, 1),
                                                'analysis_dtype': run.analysis_dtype,
                                                'training_dtype': str(run.config.model.dtype),
                                                'figures': sorted(os.listdir(final_figures))})
    target = os.path.join(run_dir.path, 'results', name)
    if os.path.exists(target):
        shutil.rmtree(target)
    os.replace(output, target)
    shutil.rmtree(figures, ignore_errors=True)


def run_analyses(config, workdir: str, log: Callable[[str], None] = print, settings: dict | None = None) -> None:
    """Runs every analysis of `config.analyses`, in order, on the run in `workdir`.

    `settings` are the validated settings from `build_settings` (built here if None).
    """
    settings = build_settings(config) if settings is None else settings
    if not config.analyses:
        return
    run = open_run(workdir)
    run.verify()
    for value in settings.values():  # before any analysis works
        value.check_workdir(workdir, config)
    context = Context(listed=tuple(config.analyses), shared=settings, log=log)
    scratch = os.path.join(run.directory.path, 'results', '.partial')
    for name in config.analyses:
        analysis = analyses()[name]
        output, figures = os.path.join(scratch, name), os.path.join(scratch, name + '.figures')
        for folder in (output, figures):
            shutil.rmtree(folder, ignore_errors=True)
            os.makedirs(folder)
        context.output, context.figures = output, figures
        started = time.time()
        analysis.module.run(run, settings[analysis.settings_key], context)
        _commit(run, name, output, figures, started)
    shutil.rmtree(scratch, ignore_errors=True)
