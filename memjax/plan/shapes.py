"""What a config will run, as shapes: its data's sizes, replicas, epochs and models, without loading data.

The named data sets' image shapes and class counts are `memjax.config.DATASETS`;
their split sizes are `SPLIT_SIZES` (the sources' own train and test splits).
The validation split, the training and test subsets follow from the config
exactly as `memjax.data.dataset.load_dataset` carves them.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from memjax.checkpoint import keep_epoch
from memjax.config import DATASETS, RunSettings, run_settings
from memjax.data.noise import num_noisy
from memjax.data.replicas import Replica, make_replicas
from memjax.data.sources import resolve_val_size
from memjax.engine.runner import ModelRunner, runner_for
from memjax.errors import ConfigError
from memjax.experiment import check
from memjax.models import StagedModel
from memjax.run import ANALYSIS_DTYPE
from memjax.train.setup import model_of

# (train, test) examples of each named data set's source splits.
SPLIT_SIZES = {'cifar10': (50_000, 10_000), 'cifar100': (50_000, 10_000), 'svhn_cropped': (73_257, 26_032),
               'mnist': (60_000, 10_000), 'fashion_mnist': (60_000, 10_000)}


@dataclasses.dataclass(frozen=True)
class RunShape:
    """A config's run, as the plan sees it.

    Attributes:
      settings: the training keys, typed.
      analyses: the listed analyses' settings {key: Settings}.
      listed: the listed analyses, in order.
      image_shape: (H, W, C); num_classes: K.
      num_train, num_val, num_test: the split sizes N, V, M.
      replicas: the R replicas.
    """

    settings: RunSettings
    analyses: dict
    listed: tuple
    image_shape: tuple
    num_classes: int
    num_train: int
    num_val: int
    num_test: int
    replicas: tuple

    @property
    def size(self) -> int:
        return len(self.replicas)

    @property
    def steps_per_epoch(self) -> int:
        return self.num_train // self.settings.train.batch_size

    @property
    def pool(self) -> int:
        """Images of the training pool on the device: train, validation, test."""
        return self.num_train + self.num_val + self.num_test

    @property
    def kept_epochs(self) -> list[int]:
        """The epochs whose params are kept, when every replica trains all train.epochs (at most these)."""
        last, keep = self.settings.train.epochs, self.settings.checkpoint
        return sorted({t for t in range(last + 1) if keep_epoch(t, keep.every, keep.epochs)} | {last})

    @property
    def noisy(self) -> list[Replica]:
        return [r for r in self.replicas if r.noise_ratio > 0]

    def relabelled(self, replica: Replica) -> int:
        """How many training examples the replica has relabelled."""
        return num_noisy(replica.noise_ratio, self.num_train)

    @functools.cached_property
    def model(self) -> StagedModel:
        """The architecture in the training dtype."""
        return model_of(self.settings, self.num_classes)

    @functools.cached_property
    def analysis_model(self) -> StagedModel:
        """The architecture as analyses run it (float32, `memjax.run.ANALYSIS_DTYPE`)."""
        return model_of(self.settings, self.num_classes, ANALYSIS_DTYPE)

    def runner(self, analysis: bool = False) -> ModelRunner:
        """A runner of the (training or analysis) model; its normalisation constants stand in for the data's
        (they change no shape or cost)."""
        channels = self.image_shape[-1]
        return runner_for(self.analysis_model if analysis else self.model, [0.5] * channels, [0.25] * channels)

    def variables(self, analysis: bool = False):
        """One model's variables, abstract (`jax.ShapeDtypeStruct`)."""
        model = self.analysis_model if analysis else self.model
        return model.variable_shapes(self.image_shape)

    def images(self, n: int) -> jax.ShapeDtypeStruct:
        """uint8 [n, H, W, C]."""
        return jax.ShapeDtypeStruct((n, *self.image_shape), jnp.uint8)


def split_sizes(data) -> tuple[int, int, int]:
    """(N, V, M) of the config's `data` keys, as `load_dataset` carves them; one error line for impossible ones."""
    if data.source == 'synthetic':
        if not data.num_train or not data.num_test:
            raise ConfigError("data.source='synthetic' needs data.num_train and data.num_test "
                              "(e.g. --config.data.num_train=2000 --config.data.num_test=500)")
        return int(data.num_train), resolve_val_size(data.val_size, int(data.num_train)), int(data.num_test)
    train, test = SPLIT_SIZES[data.name]
    val = resolve_val_size(data.val_size, train)
    if val >= train:
        raise ConfigError(f"data.val_size={val} is not smaller than the {train}-example training split of "
                          f"{data.name!r}; use a smaller --config.data.val_size")
    num_train = train - val if data.num_train is None else int(data.num_train)
    if not 0 < num_train <= train - val:
        raise ConfigError(f"data.num_train={data.num_train} must be between 1 and the {train - val} training examples "
                          f"left after the {val}-example validation split; lower it or set it to None for all")
    num_test = test if data.num_test is None else int(data.num_test)
    if not 0 < num_test <= test:
        raise ConfigError(f"data.num_test={data.num_test} must be between 1 and {test}, the size of the test split; "
                          "or None for all")
    return num_train, val, num_test


def run_shape(config) -> RunShape:
    """The RunShape of a config (checked as `memjax.experiment.check` checks it; ConfigError on bad input)."""
    analyses = check(config)
    settings = run_settings(config)
    data = settings.data
    image_shape = tuple(data.image_shape) if data.source == 'synthetic' else DATASETS[data.name][0]
    num_train, num_val, num_test = split_sizes(data)
    if settings.train.batch_size > num_train:
        raise ConfigError(f"train.batch_size={settings.train.batch_size} is larger than the {num_train} training "
                          "examples; lower --config.train.batch_size or raise --config.data.num_train")
    return RunShape(settings, analyses, tuple(config.analyses), image_shape, int(data.classes), num_train, num_val,
                    num_test, tuple(make_replicas(settings)))

