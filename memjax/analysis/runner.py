"""Runs the analyses a config lists (`config.analyses`) on a trained run.

Each analysis is a function `run_<name>(workdir, analysis_config, log)` in its
own module; it reads the run directory and `config.analysis` (its own
sub-config, plus shared ones such as `analysis.cka`). Analyses that share one
pass over the checkpoints (convergence and noisy_vs_clean) run it once.
"""

from __future__ import annotations

import importlib
from typing import Callable

from memjax.errors import ConfigError

# name -> (module, function); imported only when the analysis runs.
ANALYSES = {
    'convergence': ('cka_over_training', 'run_cka_over_training'),
    'noisy_vs_clean': ('cka_over_training', 'run_cka_over_training'),
    'cka_matrix': ('cka_matrix', 'run_cka_matrix'),
    'stitching': ('stitch_sweep', 'run_stitching'),
    'finetune': ('finetune', 'run_finetune'),
    'gradients': ('gradients', 'run_gradients'),
    'rewinding': ('rewinding', 'run_rewinding'),
    'retraining': ('retraining', 'run_retraining'),
    'neurons': ('neurons', 'run_neurons'),
    'example_tied': ('example_tied', 'run_example_tied'),
}
ANALYSIS_NAMES = tuple(ANALYSES)
_OVER_TRAINING = ('convergence', 'noisy_vs_clean')


def check_analyses(config) -> None:
    """Fails before training if an analysis name is unknown."""
    for name in config.analyses:
        if name not in ANALYSES:
            raise ConfigError(f"unknown analysis {name!r} in config.analyses; available: "
                              f"{', '.join(ANALYSIS_NAMES)}")


def run_analyses(config, workdir: str, log: Callable[[str], None] = print) -> None:
    check_analyses(config)
    done = set()
    for name in config.analyses:
        module_name, function_name = ANALYSES[name]
        if (module_name, function_name) in done:
            continue
        done.add((module_name, function_name))
        fn = getattr(importlib.import_module(f'memjax.analysis.{module_name}'), function_name)
        if module_name == 'cka_over_training':
            fn(workdir, config.analysis.get('cka'), {n for n in config.analyses if n in _OVER_TRAINING}, log)
        else:
            fn(workdir, config.analysis, log)
