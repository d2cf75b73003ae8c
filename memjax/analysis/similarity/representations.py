"""Unit representations of trained replicas, turned into CKA Grams.

Shared by the CKA analyses: pick the examples of a split, run a replica's
checkpoint over them capturing the outputs of the units of
`analysis.cka.granularity` (`StagedModel.units`: 'stage' = one unit per stage,
a residual block being one; 'layer' = one per conv+BN / linear layer, e.g.
`layer1.0.conv_bn1`, whose output is what that module returns: after its
ReLU, or for a block's last conv before the skip is added), pool or flatten
each output and form its transformed Gram (centred, or U-centred for the
debiased estimator). In minibatch mode the examples are processed in batches
of `minibatch_size` and only one batch's Grams exist at a time; every
analysis keys its results by unit name, so the granularity changes only L
(ResNet-18: 10 stages, 21 layers).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from memjax.analysis.similarity.cka import stacked_grams
from memjax.data.pipeline import normalize
from memjax.analysis.settings import AnalysisSettings, setting
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

    split: str = setting('test', 'examples the representations are computed on', choices=SPLITS)
    num_examples: int = setting(1000, 'examples used (the first of the split)')
    estimator: str = setting('linear', 'CKA estimator', choices=ESTIMATORS)
    bandwidth: float = setting(0.5, 'rbf: sigma^2 = bandwidth^2 x median squared distance (Kornblith et al.)')
    pooling: str = setting('flatten', 'conv maps: flatten (the papers) or spatial mean', choices=POOLINGS)
    minibatch_size: int | None = setting(None, 'minibatch CKA over batches of this size (None: all at once)')
    forward_batch: int = setting(500, 'examples per forward pass')
    granularity: str = setting('stage', 'units compared: stages (a residual block is one) or layers (each conv+BN '
                                        'and linear layer, e.g. layer1.0.conv_bn1)', choices=GRANULARITIES)
    stages: tuple = setting((), 'unit names to compare, stages or layers as granularity says (empty: all)')
    epochs: tuple = setting((), 'kept epochs to use (empty: all)')

    @property
    def kernel(self) -> str:
        return 'rbf' if self.estimator.startswith('rbf') else 'linear'

    @property
    def debiased(self) -> bool:
        return self.estimator.endswith('debiased')

    def validate(self) -> None:
        self.positive('num_examples', 'forward_batch')
        batch = self.minibatch_size or self.num_examples
        if self.num_examples % batch:
            raise ConfigError(f"analysis.cka.num_examples={self.num_examples} must be a multiple of "
                              f"analysis.cka.minibatch_size={batch}")
        if batch < 4:
            raise ConfigError(f"analysis.cka needs at least 4 examples per batch, got {batch}")
        if batch < self.num_examples and not self.debiased:
            raise ConfigError(f"analysis.cka.estimator={self.estimator!r} is biased and drifts with the batch size "
                              f"under analysis.cka.minibatch_size={batch}; use a *debiased estimator or no minibatch")

    def check_model(self, model) -> None:
        cka_units(model, self)


def cka_units(model: StagedModel, settings: CkaSettings) -> tuple[Unit, ...]:
    """The units compared: those named in `analysis.cka.stages` (all when empty) at the
    settings' granularity, in forward order; one error line naming a bad name and the valid ones."""
    units = model.units(settings.granularity)
    known = [u.name for u in units]
    kind = settings.granularity
    for name in settings.stages:
        if name not in known:
            other = 'layer' if kind == 'stage' else 'stage'
            hint = (f" ({name!r} is a {other}: set analysis.cka.granularity='{other}')"
                    if name in {u.name for u in model.units(other)} else '')
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
    """Transformed Grams [L, n, n] of the chosen units (L of them) of one replica's variables.

    Attributes:
      units: the `Unit`s compared, in forward order.
      names: their names [L] (stage or layer names), the key of every result.
    """

    def __init__(self, model: StagedModel, mean: np.ndarray, std: np.ndarray, settings: CkaSettings):
        self.settings = settings
        self.units = cka_units(model, settings)
        self.names = tuple(u.name for u in self.units)
        outputs = tuple(u.output for u in self.units)
        stop = max(model.stage_index(u.paths[-1][0]) for u in self.units) + 1
        pooling = settings.pooling
        mean, std = jnp.asarray(mean), jnp.asarray(std)

        def capture(variables, images):
            run = model.apply(variables, normalize(images, mean, std, model.dtype), stop=stop, capture=outputs)
            out = []
            for name in outputs:
                f = run.features[name].astype(jnp.float32)
                if pooling == 'mean' and f.ndim > 2:
                    f = jnp.mean(f, axis=tuple(range(1, f.ndim - 1)))
                out.append(f.reshape(f.shape[0], -1))
            return tuple(out)

        self._capture = jax.jit(capture)

    def features(self, variables, images: np.ndarray) -> tuple:
        """Unit features of uint8 images [n, H, W, C]: tuple of L arrays [n, D_l] (pooled or
        flattened outputs), computed in forward batches."""
        step = self.settings.forward_batch
        parts = [self._capture(variables, images[i:i + step]) for i in range(0, images.shape[0], step)]
        return tuple(jnp.concatenate([p[l] for p in parts]) for l in range(len(self.names)))

    def grams(self, variables, images: np.ndarray) -> list[jax.Array]:
        """One [L, b, b] per example batch (a single batch of all examples unless minibatch)."""
        s = self.settings
        batch = s.minibatch_size or images.shape[0]
        return [stacked_grams(self.features(variables, images[i:i + batch]), s.kernel, s.debiased, s.bandwidth)
                for i in range(0, images.shape[0] - batch + 1, batch)]


def block_ends(names: tuple[str, ...]) -> list[int]:
    """Indices [G] of the units that end a group, for dashed lines at index + 0.5 (P1 Fig. 1).

    Stage or layer names alike: a unit's group is the part before the first dot
    (`layer2.0`, `layer2.1.conv_bn2` -> `layer2`; `stem`, `head.dense` -> themselves) or,
    without a dot, the name less its digits (`conv3` -> `conv`, `fc1` -> `fc`). A line ends
    every group but the stem: for ResNet layers they fall after the last layer of each
    residual group (layer1 .. layer4), P1 Fig. 1's four dashed lines.
    """
    def group(name: str) -> str:
        return name.split('.')[0] if '.' in name else name.rstrip('0123456789')
    return [i for i in range(len(names) - 1) if group(names[i]) != group(names[i + 1]) and group(names[i]) != 'stem']
