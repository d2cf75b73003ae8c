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

from memjax.analysis.registry import analysis_config, build_settings
from memjax.config import training_config, validate
from memjax.errors import ConfigError
from memjax.models import model_from_config

# Classes of the named data sets, for checking names against the model before loading data.
NUM_CLASSES = {'mnist': 10, 'fashion_mnist': 10, 'cifar10': 10, 'cifar100': 100, 'svhn_cropped': 10}


def base_config() -> ml_collections.ConfigDict:
    c = training_config()
    c.analyses = ()                     # analyses run after training, in order
    c.analysis = analysis_config()
    return c


def check(config) -> dict:
    """Validates the whole config; returns the listed analyses' settings {key: Settings}.

    Raises:
      ConfigError: one line naming the key, the bad value and the fix.
    """
    validate(config)
    if 'analysis' not in config or 'analyses' not in config:
        raise ConfigError('the config lacks analyses/analysis; start config files from '
                          'memjax.experiment.base_config()')
    num_classes = NUM_CLASSES.get(config.data.name, config.data.num_classes)
    model = model_from_config(config.model, num_classes)
    settings = build_settings(config, model)
    needs_val = [name for name in config.analyses if name == 'stitching'
                 or (name == 'finetune' and 'val' in settings['finetune'].datasets)]
    if needs_val and config.data.val_size == 0:
        raise ConfigError(f"data.val_size=0 leaves no validation split, which {needs_val[0]} trains on; set "
                          "--config.data.val_size to a positive number (or None for the default)")
    if 'stitching' in config.analyses and config.data.val_size is not None \
            and config.data.val_size < settings['stitching'].batch_size:
        raise ConfigError(f"analysis.stitching.batch_size={settings['stitching'].batch_size} is larger than the "
                          f"data.val_size={config.data.val_size} validation examples S trains on; lower it")
    return settings
