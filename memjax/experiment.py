"""An experiment's config: the training keys plus one node per analysis, and the check at start-up.

`base_config()` is what every file in configs/ starts from: the training keys
of `memjax.config` and `analyses` / `analysis.<key>`, whose defaults come from
the analyses' Settings dataclasses (the only place they are written).
`check(config)` validates all of it before any data is loaded or anything
written: the training keys, then every listed analysis's settings, including
stage names against the model.
"""

from __future__ import annotations

import ml_collections

from memjax.analysis.registry import analysis_config, build_settings, settings_classes
from memjax.config import GROUPS, training_config, validate
from memjax.errors import ConfigError
from memjax.models import build_model


def base_config() -> ml_collections.ConfigDict:
    c = training_config()
    c.analyses = ()                     # analyses run after training, in order
    c.analysis = analysis_config()
    return c


def check(config, workdir: str | None = None) -> dict:
    """Validates the whole config; returns the listed analyses' settings {key: Settings}.

    Given the run's `workdir`, also the settings' checks against it and other
    directories (`AnalysisSettings.check_workdir`), before anything trains.

    Raises:
      ConfigError: one line naming the key, the bad value and the fix.
    """
    settings = validate(config)
    if 'analysis' not in config or 'analyses' not in config:
        raise ConfigError('the config lacks analyses/analysis; start config files from '
                          'memjax.experiment.base_config()')
    m = settings.model
    model = build_model(m.name, settings.data.classes, m.width, m.dtype, depth=m.depth, heads=m.heads,
                        patch=m.patch)
    analyses = build_settings(config, model)
    if workdir is not None:
        for value in analyses.values():
            value.check_workdir(workdir, config)
    return analyses


VARIANTS = ('smoke',)  # variants every config file accepts: --config=configs/<name>.py:smoke


def smoke(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Shrinks a config to a run that trains and analyses in seconds on a CPU (notebooks in CI).

    Every group of keys sets its own smoke values (`Settings.SMOKE`): synthetic
    class-structured 8x8x3 images (128 training examples), the CNN of width 4,
    two epochs, the smallest and the largest noise ratio, and every analysis's
    settings cut to a few examples, epochs and iterations; one seed. The listed
    analyses are kept, so the smoke run exercises the same code paths as the
    full config at toy scale.
    """
    for group in GROUPS + tuple(settings_classes().values()):
        group.apply_smoke(c)
    c.seeds = tuple(c.seeds)[:1]
    return c


def apply_variant(c: ml_collections.ConfigDict, variant: str | None,
                  own: tuple[str, ...] = ()) -> ml_collections.ConfigDict:
    """`get_config(arg)`'s shared part: None or '' leaves the config as it is, 'smoke' shrinks it.

    Args:
      own: the variants the config file handles itself (accepted here, left to it).

    Raises:
      ConfigError: an unknown variant, naming the known ones.
    """
    if not variant or variant in own:
        return c
    if variant == 'smoke':
        return smoke(c)
    raise ConfigError(f"unknown config variant {variant!r}; known: {', '.join(own + VARIANTS)} "
                      "(e.g. --config=configs/default.py:smoke)")
