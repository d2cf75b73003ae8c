"""Runs the analyses a config lists (`config.analyses`) on a trained run.

Each analysis reads the run directory and `config.analysis` (its own
sub-config, plus shared ones such as `analysis.cka`); analyses that share one
pass over the checkpoints (convergence and noisy_vs_clean) run it once.
"""

from __future__ import annotations

from typing import Callable

from memjax.errors import ConfigError


def _cka_over_training(names):
    def run(workdir, analysis, log):
        from memjax.analysis.cka_over_training import run_cka_over_training
        run_cka_over_training(workdir, analysis.get('cka'), set(names), log)
    return run


def _cka_matrix(workdir, analysis, log):
    from memjax.analysis.cka_matrix import run_cka_matrix
    run_cka_matrix(workdir, analysis, log)


def _stitching(workdir, analysis, log):
    from memjax.analysis.stitch_sweep import run_stitching
    run_stitching(workdir, analysis, log)


def _finetune(workdir, analysis, log):
    from memjax.analysis.finetune import run_finetune
    run_finetune(workdir, analysis, log)


def _rewinding(workdir, analysis, log):
    from memjax.analysis.rewinding import run_rewinding
    run_rewinding(workdir, analysis, log)


def _gradients(workdir, analysis, log):
    from memjax.analysis.gradients import run_gradients
    run_gradients(workdir, analysis, log)


def _retraining(workdir, analysis, log):
    from memjax.analysis.retraining import run_retraining
    run_retraining(workdir, analysis, log)


def _neurons(workdir, analysis, log):
    from memjax.analysis.neurons import run_neurons
    run_neurons(workdir, analysis, log)


def _example_tied(workdir, analysis, log):
    from memjax.analysis.example_tied import run_example_tied
    run_example_tied(workdir, analysis, log)


# name -> (group, run(workdir, analysis_config, log)); one group runs once with all its names.
def _registry(requested: list[str]) -> dict[str, tuple[str, Callable]]:
    over_training = [n for n in requested if n in ('convergence', 'noisy_vs_clean')]
    return {
        'convergence': ('cka_over_training', _cka_over_training(over_training)),
        'noisy_vs_clean': ('cka_over_training', _cka_over_training(over_training)),
        'cka_matrix': ('cka_matrix', _cka_matrix),
        'stitching': ('stitching', _stitching),
        'finetune': ('finetune', _finetune),
        'rewinding': ('rewinding', _rewinding),
        'gradients': ('gradients', _gradients),
        'retraining': ('retraining', _retraining),
        'neurons': ('neurons', _neurons),
        'example_tied': ('example_tied', _example_tied),
    }


ANALYSIS_NAMES = ('convergence', 'noisy_vs_clean', 'cka_matrix', 'stitching', 'finetune', 'rewinding', 'gradients',
                  'retraining', 'neurons', 'example_tied')


def check_analyses(config) -> None:
    """Fails before training if an analysis name is unknown."""
    for name in config.analyses:
        if name not in ANALYSIS_NAMES:
            raise ConfigError(f"unknown analysis {name!r} in config.analyses; available: "
                              f"{', '.join(ANALYSIS_NAMES)}")


def run_analyses(config, workdir: str, log: Callable[[str], None] = print) -> None:
    check_analyses(config)
    registry = _registry(list(config.analyses))
    done = set()
    for name in config.analyses:
        group, fn = registry[name]
        if group in done:
            continue
        done.add(group)
        fn(workdir, config.analysis, log)
