"""The training keys of a config (data, noise, model, train, checkpoint), their defaults and checks.

Config files in `configs/` start from `memjax.experiment.base_config()`, which
adds the analysis keys (built from the analyses' Settings dataclasses) to
these; every key is defined once, so `--config.a.b=...` overrides are
type-checked by ml_collections. The README's "Config keys" section documents
each one.
"""

from __future__ import annotations

import json

import ml_collections
from ml_collections.config_dict import placeholder

from memjax.errors import ConfigError

# Keys that do not change a run's results: a run directory may be resumed or
# re-analysed with different values of these (everything else must match).
RUNTIME_KEYS = ('train.strategy', 'train.steps_per_call', 'train.eval_batch_size',
                'checkpoint.async_save', 'analyses', 'analysis')


def training_config() -> ml_collections.ConfigDict:
    """The keys of data, noise, model, training and checkpoints (analyses: `memjax.experiment`)."""
    c = ml_collections.ConfigDict()
    c.data = ml_collections.ConfigDict(dict(
        source='raw',                   # 'raw' | 'tfds' | 'synthetic'
        name='fashion_mnist',           # mnist, fashion_mnist, cifar10, cifar100, svhn_cropped
        data_dir=placeholder(str),      # None: Debian's folder (raw fashion_mnist) / ~/tensorflow_datasets
        num_train=placeholder(int),     # training subset size; None = all that the validation split leaves
        num_test=placeholder(int),      # test subset size; None = all
        val_size=placeholder(int),      # None = min(5000, 10% of the training split)
        split_seed=0,                   # seed of the shuffle carving validation/subsets
        augment=False,                  # random crop (pad 4) + horizontal flip, on the device
        image_shape=(32, 32, 3),        # synthetic only
        num_classes=10,                 # synthetic only
        synthetic_seed=0,               # synthetic only
    ))
    c.noise = ml_collections.ConfigDict(dict(
        ratios=(0.0, 0.2, 0.5),         # one replica per (ratio, seed)
        mode='random',                  # 'random' (P1/P2) | 'incorrect' (P3)
        seed=0,                         # noise seed, separate from init and data order
        shared_across_seeds=False,      # True: labels depend on (seed, ratio) alone, one X_R per ratio (P4)
    ))
    c.seeds = (0,)                      # replica seeds: each drives noise, init and data order
    c.model = ml_collections.ConfigDict(dict(
        name='cnn',                     # cnn, resnet9, resnet18, resnet34, resnet50, vgg11, vgg13, vit, vit_small
        width=placeholder(int),         # None = the architecture's default
        dtype='float32',                # compute dtype: 'float32' | 'bfloat16'
        depth=placeholder(int),         # ViTs only; None = the default (vit_small 6, vit 12)
        heads=placeholder(int),         # ViTs only; None = the default (vit_small 8, vit 6)
        patch=placeholder(int),         # ViTs only; None = the default (vit_small 2, vit 4)
    ))
    c.train = ml_collections.ConfigDict(dict(
        epochs=20,                      # maximum number of epochs
        batch_size=128,
        learning_rate=0.05,             # peak learning rate
        momentum=0.9,
        nesterov=False,
        weight_decay=5e-4,              # coupled (PyTorch-style) weight decay
        weight_decay_by_ratio=(),       # ((r, wd), ...): replicas of ratio r use wd instead (P4: true labels 1e-4, random 0)
        schedule='cosine',              # 'constant' | 'cosine' | 'onecycle' | 'step'
        peak_epoch=5.0,                 # onecycle: epoch of the peak (linear 0 -> lr -> 0)
        milestones=(),                  # step: epochs at which lr is multiplied by gamma
        gamma=0.1,                      # step
        stop_accuracy=0.99,             # a replica stops once its training accuracy reaches this
        init_seed=0,
        data_seed=0,                    # data order and augmentation
        shared_start=False,             # True: replicas of one seed share init, data order and augmentation
        gradient_accounting=False,      # record clean/noisy gradient parts per stage each epoch (P3)
        input_gradients=False,          # record P4's input-gradient magnitude G per epoch
        input_gradient_definition='eval_pixels',  # 'train_normalised' (P4's) | 'eval_pixels'
        input_gradient_examples=1000,   # G is averaged over the first n training examples (0: all)
        strategy='auto',                # 'auto' | 'vmap' | 'loop' | 'shard' (replicas over devices)
        steps_per_call=0,               # steps per compiled call; 0 = auto (1 on CPU, 50 on GPU/TPU)
        eval_batch_size=1000,
    ))
    c.checkpoint = ml_collections.ConfigDict(dict(
        every=1,                        # keep params + batch_stats every k epochs (0 = only first/last)
        epochs=(),                      # explicit epochs to keep instead of `every`
        async_save=True,
    ))
    return c


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
ARCHITECTURE_KEYS = {'model.depth': ('vit', 'vit_small'), 'model.heads': ('vit', 'vit_small'),
                     'model.patch': ('vit', 'vit_small')}


# Result keys added after runs were trained without them: a config.json that lacks
# one was trained with this value (its old behaviour), so it stays resumable.
ABSENT_MEANS = {'noise.shared_across_seeds': False, 'train.input_gradient_definition': 'eval_pixels'}


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


_CHOICES = {
    'train.schedule': ('constant', 'cosine', 'onecycle', 'step'),
    'train.strategy': ('auto', 'vmap', 'loop', 'shard'),
    'noise.mode': ('random', 'incorrect'),
    'train.input_gradient_definition': ('train_normalised', 'eval_pixels'),
    'model.dtype': ('float32', 'bfloat16'),
}


def validate(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError with one line naming the bad value and the fix."""
    flat = _flatten(to_dict(config))
    for key, choices in _CHOICES.items():
        if flat[key] not in choices:
            raise ConfigError(f"{key}={flat[key]!r} is not one of {', '.join(choices)}; "
                              f"set --config.{key}=<one of them>")
    if not isinstance(flat['train.steps_per_call'], int) or flat['train.steps_per_call'] < 0:
        raise ConfigError(f"train.steps_per_call={flat['train.steps_per_call']!r} must be 0 (auto) or positive")
    for key in ('train.epochs', 'train.batch_size', 'train.eval_batch_size'):
        if not isinstance(flat[key], int) or flat[key] < 1:
            raise ConfigError(f"{key}={flat[key]!r} must be a positive integer")
    if flat['train.learning_rate'] <= 0:
        raise ConfigError(f"train.learning_rate={flat['train.learning_rate']} must be positive")
    if not flat['noise.ratios']:
        raise ConfigError("noise.ratios is empty; give at least one ratio, e.g. --config.noise.ratios='(0.0,)'")
    if not flat['seeds']:
        raise ConfigError("seeds is empty; give at least one, e.g. --config.seeds='(0,)'")
    ratios = [float(r) for r in flat['noise.ratios']]
    for r in ratios:
        if not 0.0 <= r <= 1.0:
            raise ConfigError(f"noise ratio {r} in noise.ratios is outside [0, 1]; use fractions, "
                              "e.g. --config.noise.ratios='(0.0, 0.2, 0.5)'")
    if len(set(ratios)) != len(ratios) or len(set(flat['seeds'])) != len(flat['seeds']):
        raise ConfigError(f"noise.ratios={tuple(ratios)} and seeds={tuple(flat['seeds'])} must not "
                          "repeat a value (each (ratio, seed) pair is one replica)")
    if flat['train.schedule'] == 'onecycle' and not 0 <= flat['train.peak_epoch'] <= flat['train.epochs']:
        raise ConfigError(f"train.peak_epoch={flat['train.peak_epoch']} must lie within "
                          f"[0, train.epochs={flat['train.epochs']}] for the one-cycle schedule")
    for pair in flat['train.weight_decay_by_ratio']:
        if len(pair) != 2 or not any(abs(float(pair[0]) - r) < 1e-9 for r in ratios) or float(pair[1]) < 0:
            raise ConfigError(f"train.weight_decay_by_ratio has {tuple(pair)!r}; give (ratio, weight_decay) pairs "
                              f"with a ratio of noise.ratios={tuple(ratios)} and a decay >= 0")
    if not isinstance(flat['train.input_gradient_examples'], int) or flat['train.input_gradient_examples'] < 0:
        raise ConfigError(f"train.input_gradient_examples={flat['train.input_gradient_examples']!r} must be 0 "
                          "(every training example, P4) or a positive number of first examples")
    if flat['checkpoint.every'] < 0:
        raise ConfigError(f"checkpoint.every={flat['checkpoint.every']} must be >= 0")
