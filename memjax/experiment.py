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


def check(config, workdir: str | None = None) -> dict:
    """Validates the whole config; returns the listed analyses' settings {key: Settings}.

    Given the run's `workdir`, also the settings' checks against it and other
    directories (`AnalysisSettings.check_workdir`), before anything trains.

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
    if workdir is not None:
        for value in settings.values():
            value.check_workdir(workdir, config)
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


VARIANTS = ('smoke',)  # variants every config file accepts: --config=configs/<name>.py:smoke


def smoke(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Shrinks a config to a run that trains and analyses in seconds on a CPU (notebooks in CI).

    Synthetic class-structured 8x8x3 images (128 training examples), the small
    CNN of width 4, two epochs, at most two noise ratios (the smallest and the
    largest) and one seed, and every analysis's settings cut to a few examples,
    epochs and iterations. The listed analyses are kept, so the smoke run
    exercises the same code paths as the full config at toy scale.
    """
    ratios = tuple(sorted(set(float(r) for r in c.noise.ratios)))
    c.noise.ratios = (ratios[0],) if len(ratios) == 1 else (ratios[0], ratios[-1])
    c.seeds = tuple(c.seeds)[:1]
    c.train.weight_decay_by_ratio = tuple(p for p in c.train.weight_decay_by_ratio
                                          if any(abs(float(p[0]) - r) < 1e-9 for r in c.noise.ratios))
    c.data.source = 'synthetic'
    c.data.data_dir = None
    c.data.num_train = 128
    c.data.val_size = 32
    c.data.num_test = 64
    c.data.image_shape = (8, 8, 3)
    c.data.num_classes = NUM_CLASSES.get(c.data.name, 10)
    c.data.augment = False
    c.model.name = 'cnn'
    c.model.width = 4
    c.model.dtype = 'float32'
    c.train.epochs = 2
    c.train.batch_size = 32
    c.train.learning_rate = 0.05
    c.train.schedule = 'constant'
    c.train.stop_accuracy = None
    c.train.strategy = 'loop'
    c.train.eval_batch_size = 64
    c.train.input_gradient_examples = 32
    c.checkpoint.every = 1
    c.checkpoint.epochs = ()
    c.checkpoint.async_save = False
    a = c.analysis
    a.cka.num_examples, a.cka.forward_batch, a.cka.minibatch_size = 32, 32, None
    a.stitching.epochs, a.stitching.batch_size, a.stitching.eval_batch_size = 1, 32, 64
    a.finetune.epochs, a.finetune.batch_size = 1, 32
    a.gradients.num_train, a.gradients.batch_size = 64, 32
    a.rewinding.num_train, a.rewinding.num_test = 64, 64
    a.retraining.epochs, a.retraining.peak_epoch, a.retraining.batch_size, a.retraining.num_train = 1, 1.0, 32, 64
    a.neurons.num_clean, a.neurons.num_noisy, a.neurons.max_neurons = 2, 2, 3
    a.neurons.reference_batch, a.neurons.accuracy_examples, a.neurons.parallel = 8, 16, 4
    a.neurons.noise_copies = 2
    a.example_tied.epochs, a.example_tied.variants = 1, (('example_tied', 0.4, 0.2, 0.0),)
    a.dissimilarity.generator_epochs, a.dissimilarity.generator_batch_size = 1, 32
    a.dissimilarity.generator_width, a.dissimilarity.num_seeds, a.dissimilarity.iterations = 8, 2, 3
    a.input_gradients.num_examples = 32
    a.manifolds.examples_per_class, a.manifolds.min_examples, a.manifolds.n_t = 2, 2, 20
    a.manifolds.epochs, a.manifolds.solver_iterations, a.manifolds.forward_batch = (2,), 2000, 64
    # A few of the CNN's stages where an analysis compiles one program per stage.
    a.stitching.points, a.finetune.stages, a.retraining.units = ('conv2',), ('conv2',), ('conv2',)
    a.manifolds.stages, a.manifolds.classes = ('conv3', 'fc4'), (0, 1, 2, 3)
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
