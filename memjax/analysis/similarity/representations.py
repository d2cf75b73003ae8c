"""Unit representations of trained replicas, turned into CKA Grams.

Shared by the CKA analyses: pick the examples of a split, run a replica's
checkpoint over them capturing the outputs of the units of
`analysis.cka.granularity` (`cka_units`: 'stage' = one unit per stage, a
residual block being one; 'layer' = one per conv+BN / linear layer, e.g.
`layer1.0.conv_bn1`, whose output is what that module returns: after its
ReLU, or for a block's last conv before the skip is added; and after each
residual block's layers the block's own output after the skip addition,
`layer1.0`), pool or flatten each output and form its Grams.

Two estimators of the Grams (`analysis.cka.minibatch_size`):
- None (the default; P1's estimator): full batch. Each unit's N x N Gram of
  all N examples is accumulated blockwise from example blocks of
  `forward_batch` (`cka.blockwise_grams`) and centred (H K H); CKA is then
  exact full-batch CKA, biased (the `cka` column for the biased estimators)
  and debiased (`cka_debiased`) from the same Grams. Memory: L x N^2 x 4
  bytes per model held, plus two blocks' features and the forward pass of a
  third (3 x forward_batch x sum_l D_l x 4 bytes; ResNet-18's 29 layer
  units: sum_l D_l = 860k per CIFAR image, 3.4 MB); `check_memory` refuses
  what the device cannot hold.
- b (Nguyen, Raghu & Kornblith 2021): minibatch debiased CKA, HSIC summed
  over batches of b examples, one [L, b, b] Gram per batch (L x N x b x 4
  bytes per model).
Every analysis keys its results by unit name, so the granularity changes
only L (ResNet-18: 10 stages; 29 layer units, 21 layers and 8 block outputs).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar
import os

import jax
import jax.numpy as jnp
import numpy as np

from memjax.analysis.similarity.cka import MinibatchCKA, blockwise_grams, full_batch_cka, stacked_grams
from memjax.analysis.settings import AT_LEAST_1, AnalysisSettings, NON_NEGATIVE, POSITIVE, Range, setting
from memjax.engine.runner import ModelRunner
from memjax.errors import ConfigError
from memjax.models import StagedModel
from memjax.models.units import Unit

ESTIMATORS = ('linear', 'debiased', 'rbf', 'rbf_debiased')
POOLINGS = ('flatten', 'mean')
SPLITS = ('test', 'val', 'train')
GRANULARITIES = ('stage', 'layer')


@dataclasses.dataclass(frozen=True)
class CkaSettings(AnalysisSettings):
    """How representations are compared (config: `analysis.cka`; read by every CKA analysis)."""

    KEY: ClassVar[str] = 'cka'
    SMOKE: ClassVar[dict] = dict(num_examples=32, forward_batch=32, minibatch_size=None)

    split: str = setting('test', 'examples the representations are computed on', choices=SPLITS)
    num_examples: int = setting(1000, 'examples used (the first of the split)', range=Range(4))
    estimator: str = setting('linear', 'CKA estimator', choices=ESTIMATORS)
    bandwidth: float = setting(0.5, 'rbf: sigma^2 = bandwidth^2 x median squared distance (Kornblith et al.)',
                               range=POSITIVE)
    pooling: str = setting('flatten', 'conv maps: flatten (the papers) or spatial mean', choices=POOLINGS)
    minibatch_size: int | None = setting(None, 'minibatch CKA over batches of this size, debiased estimators only '
                                               '(None: full batch, each unit\'s N x N Gram accumulated blockwise, '
                                               'L x N^2 x 4 bytes per model held)', range=Range(4))
    forward_batch: int = setting(500, 'examples per forward pass (full batch: the block of examples, two blocks\' '
                                      'features held at a time)', range=AT_LEAST_1)
    granularity: str = setting('stage', 'units compared: stages (a residual block is one) or layers (each conv+BN '
                                        'and linear layer, e.g. layer1.0.conv_bn1, and each residual block\'s '
                                        'output after the skip addition, e.g. layer1.0)', choices=GRANULARITIES)
    stages: tuple = setting((), 'unit names to compare, stages or layers as granularity says (empty: all)',
                            range='unit names of the model')
    epochs: tuple = setting((), 'kept epochs to use (empty: all)', range=NON_NEGATIVE)

    @property
    def kernel(self) -> str:
        return 'rbf' if self.estimator.startswith('rbf') else 'linear'

    @property
    def debiased(self) -> bool:
        return self.estimator.endswith('debiased')

    @property
    def full_batch(self) -> bool:
        return self.minibatch_size is None

    def describe(self) -> str:
        """The estimator in words, e.g. 'linear CKA, full batch of 10000' (logs, npz, figure titles)."""
        if self.full_batch:
            return f'{self.estimator} CKA, full batch of {self.num_examples}'
        return f'{self.estimator} CKA, minibatches of {self.minibatch_size}'

    def validate(self) -> None:
        batch = self.minibatch_size or self.num_examples
        if self.num_examples % batch:
            raise ConfigError(f"analysis.cka.num_examples={self.num_examples} must be a multiple of "
                              f"analysis.cka.minibatch_size={batch}")
        if batch < self.num_examples and not self.debiased:
            raise ConfigError(f"analysis.cka.estimator={self.estimator!r} is biased and drifts with the batch size "
                              f"under analysis.cka.minibatch_size={batch}; use a *debiased estimator or no minibatch")

    def check_model(self, model) -> None:
        cka_units(model, self)


def layer_units(model: StagedModel) -> tuple[Unit, ...]:
    """CKA's units at 'layer' granularity, in forward order: every layer (`model.units('layer')`)
    and, after the last layer of each stage with several layers (a residual block), the stage's
    own output after the skip addition, named as the stage (`layer1.0`). ResNet-18: stem,
    layer1.0.conv_bn1, layer1.0.conv_bn2, layer1.0, layer1.1.conv_bn1, ..., layer2.0.shortcut,
    layer2.0, ..., head.dense. (Other analyses' layer units have parameters of their own; a
    block output has none, so it is CKA's alone.)"""
    by_stage: dict[str, list[str]] = {}
    for layer in model.layers:
        by_stage.setdefault(layer.stage, []).append(layer.name)
    units = []
    for unit, layer in zip(model.units('layer'), model.layers):
        units.append(unit)
        names = by_stage[layer.stage]
        if len(names) > 1 and layer.name == names[-1]:
            units.append(Unit(layer.stage, ((layer.stage,),), tuple(names), layer.stage))
    return tuple(units)


def cka_units(model: StagedModel, settings: CkaSettings) -> tuple[Unit, ...]:
    """The units compared: those named in `analysis.cka.stages` (all when empty) at the
    settings' granularity, in forward order; one error line naming a bad name and the valid ones."""
    def units_of(kind):
        return layer_units(model) if kind == 'layer' else model.units(kind)
    units = units_of(settings.granularity)
    known = [u.name for u in units]
    kind = settings.granularity
    for name in settings.stages:
        if name not in known:
            other = 'layer' if kind == 'stage' else 'stage'
            hint = (f" ({name!r} is a {other}: set analysis.cka.granularity='{other}')"
                    if name in {u.name for u in units_of(other)} else '')
            raise ConfigError(f"analysis.cka.stages names {kind} {name!r}, which {model.name} lacks at "
                              f"analysis.cka.granularity={kind!r}{hint}; its {kind}s: {', '.join(known)}")
    return tuple(u for u in units if not settings.stages or u.name in settings.stages)


def split_images(run, settings: CkaSettings) -> np.ndarray:
    """The first `num_examples` images of the settings' split: uint8 [n, H, W, C]."""
    images, _ = run.split(settings.split)
    if settings.num_examples > images.shape[0]:
        raise ConfigError(f"analysis.cka.num_examples={settings.num_examples} is more than the "
                          f"{images.shape[0]} examples of the {settings.split} split; lower it")
    return images[:settings.num_examples]


class GramMaker:
    """Grams of the chosen units (L of them) of one replica's variables.

    Attributes:
      units: the `Unit`s compared, in forward order.
      names: their names [L] (stage or layer names), the key of every result.
      feature_size: sum over the units of their features' width D_l (per example).
    """

    def __init__(self, runner: ModelRunner, settings: CkaSettings):
        self.settings, self.runner = settings, runner
        self.units = cka_units(runner.model, settings)
        self.names = tuple(u.name for u in self.units)
        self._static = dict(outputs=tuple(u.output for u in self.units), pooling=settings.pooling)
        self._capture = runner.jitted('features', **self._static)

    def feature_size(self, image_shape: tuple) -> int:
        """sum_l D_l for images of `image_shape` [H, W, C] (shapes only, nothing computed)."""
        model = self.runner.model
        variables = model.variable_shapes(image_shape)
        images = jax.ShapeDtypeStruct((1, *image_shape), jnp.uint8)
        shapes = jax.eval_shape(lambda v, x: self.runner.features(v, x, **self._static), variables, images)
        return sum(int(f.shape[-1]) for f in shapes)

    def features(self, variables, images: np.ndarray) -> tuple:
        """Unit features of uint8 images [n, H, W, C]: tuple of L arrays [n, D_l] (pooled or
        flattened outputs), computed in forward batches."""
        step = self.settings.forward_batch
        parts = [self._capture(variables, images[i:i + step]) for i in range(0, images.shape[0], step)]
        if len(parts) == 1:
            return parts[0]
        return tuple(jnp.concatenate([p[l] for p in parts]) for l in range(len(self.names)))

    def grams(self, variables, images: np.ndarray) -> list[jax.Array]:
        """Full batch: [the centred kernel Grams [L, n, n] of all n examples], accumulated over
        example blocks of forward_batch. Minibatch: one transformed (centred or U-centred) Gram
        [L, b, b] per batch of b = minibatch_size examples. Compare two with `compare`."""
        s = self.settings
        if s.full_batch:
            return [blockwise_grams(lambda a, b: self._capture(variables, images[a:b]), images.shape[0],
                                    s.forward_batch, s.kernel, s.bandwidth)]
        batch = s.minibatch_size
        return [stacked_grams(self.features(variables, images[i:i + batch]), s.kernel, s.debiased, s.bandwidth)
                for i in range(0, images.shape[0] - batch + 1, batch)]

    def memory(self, models_held: int, image_shape: tuple) -> tuple[int, str]:
        """(bytes, a sentence) of what holding `models_held` models' Grams costs, features included."""
        s = self.settings
        batch = s.minibatch_size or s.num_examples
        grams = models_held * len(self.names) * s.num_examples * batch * 4
        step = min(s.forward_batch, s.num_examples)
        # Full batch: two blocks' features held and the next block in its forward pass; minibatch: one
        # batch's features and the forward pass.
        examples = 3 * step if s.full_batch else batch + step
        features = examples * self.feature_size(image_shape) * 4
        text = (f'{models_held} models\' Grams of {len(self.names)} units x {s.num_examples} x {batch} examples '
                f'({grams / 2 ** 30:.2f} GiB) + unit features of {examples} examples ({features / 2 ** 30:.2f} GiB)')
        return grams + features, text


def device_memory() -> int | None:
    """Bytes of memory of the default device: its allocator's limit, or the host's RAM on the CPU backend."""
    device = jax.devices()[0]
    stats = device.memory_stats() if hasattr(device, 'memory_stats') else None
    if stats and stats.get('bytes_limit'):
        return int(stats['bytes_limit'])
    if device.platform == 'cpu':
        try:
            return os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
        except (ValueError, OSError, AttributeError):
            return None
    return None


def check_memory(maker: GramMaker, models_held: int, image_shape: tuple, log) -> None:
    """Logs the Grams' memory; one error line, before any Gram is formed, if the device cannot hold it."""
    need, text = maker.memory(models_held, image_shape)
    limit = device_memory()
    log(f'  cka memory: {text}' + (f' of {limit / 2 ** 30:.1f} GiB' if limit else ''))
    if limit and need > limit:
        s = maker.settings
        raise ConfigError(f"analysis.cka: {s.describe()} needs {text}, more than the device's "
                          f"{limit / 2 ** 30:.1f} GiB; lower analysis.cka.num_examples={s.num_examples} or "
                          f"analysis.cka.forward_batch={s.forward_batch}, name fewer units in analysis.cka.stages, "
                          "or use minibatch CKA (analysis.cka.estimator=debiased, analysis.cka.minibatch_size=1000)")


def compare(grams_a: list, grams_b: list, settings: CkaSettings, diagonal: bool = False) -> dict[str, np.ndarray]:
    """CKA of every unit of model A against every unit of model B, from `GramMaker.grams`.

    Returns:
      {'cka': [La, Lb]} with the settings' estimator and, in full batch, 'cka_debiased' [La, Lb]:
      the debiased value of the same kernel from the same Grams. With `diagonal`, unit l of A
      against unit l of B only: [L] each.
    """
    if settings.full_batch:
        biased, debiased = (np.asarray(v) for v in full_batch_cka(grams_a[0], grams_b[0], diagonal=diagonal))
        return {'cka': debiased if settings.debiased else biased, 'cka_debiased': debiased}
    accumulator = MinibatchCKA(debiased=settings.debiased)
    for ga, gb in zip(grams_a, grams_b):
        accumulator.update(ga, gb)
    result = np.asarray(accumulator.result())
    return {'cka': np.diagonal(result) if diagonal else result}


def block_ends(names: tuple[str, ...]) -> list[int]:
    """Indices [G] of the units that end a group, for dashed lines at index + 0.5 (P1 Fig. 1).

    Stage or layer names alike: a unit's group is the part before the first dot
    (`layer2.0`, `layer2.1.conv_bn2` -> `layer2`; `stem`, `head.dense` -> themselves), a name
    without a dot that heads dotted names is its own group (ResNet-9's block output `layer3`
    after `layer3.conv_bn2`), and any other name without a dot is its name less its digits
    (`conv3` -> `conv`, `fc1` -> `fc`). A line ends every group but the stem: for ResNet layer
    units they fall after the last unit of each residual group (layer1 .. layer4: its last
    block's output), P1 Fig. 1's four dashed lines.
    """
    heads = {name.split('.')[0] for name in names if '.' in name}

    def group(name: str) -> str:
        if '.' in name or name in heads:
            return name.split('.')[0]
        return name.rstrip('0123456789')
    return [i for i in range(len(names) - 1) if group(names[i]) != group(names[i + 1]) and group(names[i]) != 'stem']
