"""The training keys of a config (data, noise, model, train, checkpoint), their defaults and checks.

Config files in `configs/` start from `memjax.experiment.base_config()`, which
adds the analysis keys (built from the analyses' Settings dataclasses) to
these; every key is defined once, so `--config.a.b=...` overrides are
type-checked by ml_collections. The README's "Config keys" section documents
each one.
"""

from __future__ import annotations

import dataclasses
import json
from typing import ClassVar

import ml_collections

from memjax.errors import ConfigError
from memjax.schema import AT_LEAST_1, FRACTION, NON_NEGATIVE, POSITIVE, SEED, Range, Settings, freeze, setting

# Keys that do not change a run's results: a run directory may be resumed or
# re-analysed with different values of these (everything else must match).
RUNTIME_KEYS = ('train.strategy', 'train.steps_per_call', 'train.eval_batch_size', 'train.reference_time',
                'checkpoint.async_save', 'analyses', 'analysis')


# The named data sets: image shape and class count (the one table; data sources read it).
DATASETS = {'mnist': ((28, 28, 1), 10), 'fashion_mnist': ((28, 28, 1), 10), 'cifar10': ((32, 32, 3), 10),
            'cifar100': ((32, 32, 3), 100), 'svhn_cropped': ((32, 32, 3), 10)}
SOURCES = ('raw', 'tfds', 'synthetic')
OPTIMIZERS = ('sgd', 'adam')
# The architectures of memjax.models (its registry checks that it builds exactly these).
ARCHITECTURES = ('cnn', 'resnet9', 'resnet18', 'resnet32', 'resnet34', 'resnet50', 'vgg11', 'vgg13', 'vit',
                 'vit_small')
VITS = ('vit', 'vit_small')
# How replicas are lifted (memjax.engine.lifting); auto: a rule of the machine (see the README).
STRATEGIES = ('auto', 'vmap', 'map', 'loop', 'shard')
SCHEDULES = ('constant', 'cosine', 'onecycle', 'step')
NOISE_MODES = ('random', 'incorrect')
INPUT_GRADIENT_DEFINITIONS = ('train_normalised', 'eval_pixels')


@dataclasses.dataclass(frozen=True)
class DataSettings(Settings):
    """`data`: where the images come from and how the splits are carved."""

    KEY: ClassVar[str] = 'data'
    SMOKE: ClassVar[dict] = dict(source='synthetic', data_dir=None, num_train=128, val_size=32, num_test=64,
                                 image_shape=(8, 8, 3), augment=False,
                                 num_classes=lambda node, config: DATASETS.get(node.name, (None, node.num_classes))[1])

    source: str = setting('raw', 'raw files, tfds (array_record), or synthetic images', choices=SOURCES)
    name: str = setting('fashion_mnist', 'the data set', choices=tuple(DATASETS))
    data_dir: str | None = setting(None, "folder of raw files / tfds data_dir (None: Debian's Fashion-MNIST, "
                                   '~/tensorflow_datasets)', range='a folder')
    num_train: int | None = setting(None, 'training subset size (None: everything the validation split leaves)',
                                    range=AT_LEAST_1)
    num_test: int | None = setting(None, 'test subset size (None: all)', range=AT_LEAST_1)
    val_size: int | None = setting(None, 'validation examples carved from the training split (None: min(5000, '
                                   '10%))', range=NON_NEGATIVE)
    split_seed: int = setting(0, 'seed of the shuffle that carves the splits', range=SEED)
    augment: bool = setting(False, 'random crop (pad 4) + horizontal flip, on the device')
    image_shape: tuple = setting((32, 32, 3), 'synthetic only: (H, W, C)', range=AT_LEAST_1)
    num_classes: int = setting(10, 'synthetic only: classes', range=Range(2))
    synthetic_seed: int = setting(0, 'synthetic only: seed of the images', range=SEED)

    def validate(self) -> None:
        if len(self.image_shape) != 3:
            raise self.error('image_shape', 'must be (H, W, C)')

    @property
    def classes(self) -> int:
        """The data set's class count (synthetic: num_classes)."""
        return self.num_classes if self.source == 'synthetic' else DATASETS[self.name][1]


@dataclasses.dataclass(frozen=True)
class NoiseSettings(Settings):
    """`noise`: which training labels each replica gets redrawn."""

    KEY: ClassVar[str] = 'noise'
    SMOKE: ClassVar[dict] = dict(ratios=lambda node, config: _ends(node.ratios))

    ratios: tuple = setting((0.0, 0.2, 0.5), 'noise ratios r; one replica per (ratio, seed)', range=FRACTION)
    mode: str = setting('random', 'random: any class (P1, P2); incorrect: a wrong class (P3)', choices=NOISE_MODES)
    seed: int = setting(0, 'noise seed, separate from init and data order', range=SEED)
    shared_across_seeds: bool = setting(False, 'the relabelled set and its labels depend on (noise seed, ratio) '
                                        'alone: every seed of a ratio memorizes the same labels (P4)')

    def validate(self) -> None:
        if not self.ratios:
            raise ConfigError("noise.ratios is empty; give at least one ratio, e.g. --config.noise.ratios='(0.0,)'")
        if len(set(self.ratios)) != len(self.ratios):
            raise self.error('ratios', 'repeats a value (each (ratio, seed) pair is one replica)')


@dataclasses.dataclass(frozen=True)
class ModelSettings(Settings):
    """`model`: the architecture."""

    KEY: ClassVar[str] = 'model'
    SMOKE: ClassVar[dict] = dict(name='cnn', width=4, dtype='float32')

    name: str = setting('cnn', 'architecture (see Models)', choices=ARCHITECTURES)
    width: int | None = setting(None, "base width (None: the architecture's default: CNN 32, ResNet/VGG 64, "
                                'vit_small 512, vit 384)', range=AT_LEAST_1)
    dtype: str = setting('float32', 'compute dtype (params stay float32)', choices=('float32', 'bfloat16'))
    depth: int | None = setting(None, 'ViTs only: blocks (None: vit_small 6, vit 12)', range=AT_LEAST_1)
    heads: int | None = setting(None, 'ViTs only: attention heads (None: vit_small 8, vit 6)', range=AT_LEAST_1)
    patch: int | None = setting(None, 'ViTs only: patch size (None: vit_small 2, vit 4)', range=AT_LEAST_1)


@dataclasses.dataclass(frozen=True)
class TrainSettings(Settings):
    """`train`: the optimizer, the schedule, when a replica stops, and what training records."""

    KEY: ClassVar[str] = 'train'
    SMOKE: ClassVar[dict] = dict(epochs=2, batch_size=32, learning_rate=0.05, schedule='constant',
                                 stop_accuracy=None, strategy='loop', eval_batch_size=64, input_gradient_examples=32,
                                 reference_time=(), optimizer='sgd',
                                 weight_decay_by_ratio=lambda node, config: tuple(
                                     p for p in node.weight_decay_by_ratio
                                     if any(abs(float(p[0]) - r) < 1e-9 for r in config.noise.ratios)))

    epochs: int = setting(20, 'maximum epochs', range=AT_LEAST_1)
    batch_size: int = setting(128, 'batch size', range=AT_LEAST_1)
    optimizer: str = setting('sgd', 'sgd (momentum, see momentum/nesterov) or adam (momentum and nesterov '
                             'unused)', choices=OPTIMIZERS)
    learning_rate: float = setting(0.05, '(peak) learning rate', range=POSITIVE)
    momentum: float = setting(0.9, 'SGD momentum', range=Range(0, 1, high_open=True))
    nesterov: bool = setting(False, 'Nesterov momentum')
    weight_decay: float = setting(5e-4, 'coupled (PyTorch-style) weight decay', range=NON_NEGATIVE)
    weight_decay_by_ratio: tuple = setting((), '((r, wd), ...): replicas of ratio r use weight decay wd (P4: 1e-4 on '
                                           'true labels, 0 on random)', range='(ratio of noise.ratios, decay >= 0) pairs')
    schedule: str = setting('cosine', 'learning-rate schedule: onecycle is 0 -> peak at peak_epoch -> 0',
                            choices=SCHEDULES)
    peak_epoch: float = setting(5.0, 'onecycle: epoch of the peak', range=NON_NEGATIVE)
    milestones: tuple = setting((), 'step: epochs at which the rate is multiplied by gamma', range=NON_NEGATIVE)
    gamma: float = setting(0.1, 'step: the factor', range=POSITIVE)
    stop_accuracy: float | None = setting(0.99, 'a replica stops (is frozen) when its training accuracy reaches '
                                          'this; None: never', range=Range(0, 1, low_open=True))
    init_seed: int = setting(0, 'initialisation seed', range=SEED)
    data_seed: int = setting(0, 'data-order and augmentation seed', range=SEED)
    shared_start: bool = setting(False, 'replicas of one seed share init, data order and augmentation (default: '
                                 'each (ratio, seed) is an independent model)')
    gradient_accounting: bool = setting(False, "record each epoch's clean and noisy gradient parts per parameter "
                                        'tensor (P3 section 4)')
    input_gradients: bool = setting(False, "record P4's input-gradient magnitude G every epoch")
    input_gradient_definition: str = setting('eval_pixels', "G's definition: train_normalised (P4's) or "
                                             'eval_pixels', choices=INPUT_GRADIENT_DEFINITIONS)
    input_gradient_examples: int = setting(1000, 'G is averaged over the first n training examples (0: all)',
                                           range=NON_NEGATIVE)
    strategy: str = setting('auto', 'how replicas are lifted (auto: loop on CPU, vmap on one accelerator, shard '
                            'over several)', choices=STRATEGIES)
    steps_per_call: int = setting(0, 'training steps per compiled call (0: 1 on CPU, 50 elsewhere)',
                                  range=NON_NEGATIVE)
    eval_batch_size: int = setting(1000, 'evaluation batch size', range=AT_LEAST_1)
    reference_time: tuple = setting((), "(seconds of epoch 1, compilation included; seconds of the whole job, "
                                    'analyses included) measured on a reference machine: the start line quotes '
                                    "them and scales them by this machine's epoch 1 (empty: no estimate)",
                                    range=POSITIVE)

    def validate(self) -> None:
        if self.reference_time and len(self.reference_time) != 2:
            raise self.error('reference_time', 'must be (epoch 1 seconds, whole job seconds) or ()')
        if self.schedule == 'onecycle' and self.peak_epoch > self.epochs:
            raise self.error('peak_epoch', f'must lie within [0, train.epochs={self.epochs}] for the one-cycle '
                             'schedule')


@dataclasses.dataclass(frozen=True)
class CheckpointSettings(Settings):
    """`checkpoint`: which epochs' params are kept for the analyses."""

    KEY: ClassVar[str] = 'checkpoint'
    SMOKE: ClassVar[dict] = dict(every=1, epochs=(), async_save=False)

    every: int = setting(1, 'keep params every k epochs (0: only the first and the last)', range=NON_NEGATIVE)
    epochs: tuple = setting((), 'explicit epochs to keep instead', range=NON_NEGATIVE)
    async_save: bool = setting(True, 'asynchronous orbax saves')


GROUPS = (DataSettings, NoiseSettings, ModelSettings, TrainSettings, CheckpointSettings)


def _ends(ratios) -> tuple:
    """The smallest and the largest of the ratios (the smoke variant's replicas)."""
    ordered = sorted(set(float(r) for r in ratios))
    return tuple(ordered[:1] + ordered[-1:]) if len(ordered) > 1 else tuple(ordered)


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """The training keys of a config, typed and checked (what training reads)."""

    data: DataSettings
    noise: NoiseSettings
    model: ModelSettings
    train: TrainSettings
    checkpoint: CheckpointSettings
    seeds: tuple


def training_config() -> ml_collections.ConfigDict:
    """The keys of data, noise, model, training and checkpoints (analyses: `memjax.experiment`),
    with their defaults from the Settings above."""
    c = ml_collections.ConfigDict()
    for group in GROUPS:
        c[group.KEY] = group.config_node()
    c.seeds = (0,)                      # replica seeds: replicas = ratios x seeds
    return c


def run_settings(config) -> RunSettings:
    """The typed training keys of a config (ConfigDict or the dict of a config.json); missing keys
    take their defaults (a run trained before a key existed was trained with its default).

    Raises:
      ConfigError: one line naming the key, the bad value and the fix.
    """
    get = config.get if hasattr(config, 'get') else dict(config).get
    groups = {group.KEY: group.from_config(get(group.KEY) or {}) for group in GROUPS}
    seeds = freeze(get('seeds', (0,)))
    if not isinstance(seeds, tuple) or not seeds or any(not isinstance(s, int) or isinstance(s, bool) or s < 0
                                                        for s in seeds):
        raise ConfigError(f"seeds={seeds!r} must be a non-empty tuple of integers >= 0, e.g. --config.seeds='(0,)'")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f'seeds={seeds!r} repeats a seed (each (ratio, seed) pair is one replica)')
    ratios = groups['noise'].ratios
    for pair in groups['train'].weight_decay_by_ratio:
        if len(pair) != 2 or not any(abs(float(pair[0]) - r) < 1e-9 for r in ratios) or float(pair[1]) < 0:
            raise ConfigError(f"train.weight_decay_by_ratio has {tuple(pair)!r}; give (ratio, weight_decay) pairs "
                              f"with a ratio of noise.ratios={tuple(ratios)} and a decay >= 0")
    return RunSettings(seeds=seeds, **groups)


def to_dict(config: ml_collections.ConfigDict) -> dict:
    """The config as plain JSON-compatible data (tuples become lists)."""
    return json.loads(config.to_json_best_effort())


def _flatten(tree: dict, prefix: str = '') -> dict:
    out = {}
    for key, value in tree.items():
        name = f'{prefix}{key}'
        if isinstance(value, dict):
            out.update(_flatten(value, name + '.'))
        else:
            out[name] = value
    return out


# Keys only some architectures read: they do not determine the results of the others.
ARCHITECTURE_KEYS = {'model.depth': VITS, 'model.heads': VITS, 'model.patch': VITS}


# Result keys added after runs were trained without them: a config.json that lacks
# one was trained with this value (its old behaviour), so it stays resumable.
ABSENT_MEANS = {'noise.shared_across_seeds': False, 'train.optimizer': 'sgd', 'train.input_gradient_definition': 'eval_pixels'}


def result_keys(config_dict: dict) -> dict:
    """Flattened config without the RUNTIME_KEYS and the architecture keys the model
    ignores (a CNN's `model.patch`): what determines a run's results. A key of
    ABSENT_MEANS that the config lacks takes the value older runs were trained with."""
    flat = _flatten(config_dict)
    sections = {k.split('.')[0] for k in flat}
    flat = {**{k: v for k, v in ABSENT_MEANS.items() if k.split('.')[0] in sections}, **flat}
    model = flat.get('model.name')
    return {k: v for k, v in flat.items()
            if not any(k == r or k.startswith(r + '.') for r in RUNTIME_KEYS)
            and (k not in ARCHITECTURE_KEYS or model in ARCHITECTURE_KEYS[k])}


def config_differences(old: dict, new: dict) -> list[str]:
    """Human-readable `key: old -> new` for result keys that differ."""
    a, b = result_keys(old), result_keys(new)
    return [f'{k}: {a.get(k)!r} -> {b.get(k)!r}' for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def validate(config) -> RunSettings:
    """Checks every training key (`run_settings`); raises ConfigError with one line naming the bad value and
    the fix."""
    return run_settings(config)
