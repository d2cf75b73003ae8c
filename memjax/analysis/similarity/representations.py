"""Stage representations of trained replicas, turned into CKA Grams.

Shared by the CKA analyses: pick the examples of a split, run a replica's
checkpoint over them capturing the requested stages, pool or flatten each
stage's output and form its transformed Gram (centred, or U-centred for the
debiased estimator). In minibatch mode the examples are processed in batches
of `minibatch_size` and only one batch's Grams exist at a time.
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

ESTIMATORS = ('linear', 'debiased', 'rbf', 'rbf_debiased')
POOLINGS = ('flatten', 'mean')
SPLITS = ('test', 'val', 'train')


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
    stages: tuple = setting((), 'stage names to compare (empty: all)')
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
        model.select_stages(self.stages, 'analysis.cka.stages')


def split_images(run, settings: CkaSettings) -> np.ndarray:
    """The first `num_examples` images of the settings' split: uint8 [n, H, W, C]."""
    images, _ = run.split(settings.split)
    if settings.num_examples > images.shape[0]:
        raise ConfigError(f"analysis.cka.num_examples={settings.num_examples} is more than the "
                          f"{images.shape[0]} examples of the {settings.split} split; lower it")
    return images[:settings.num_examples]


class GramMaker:
    """Transformed Grams [L, n, n] of the chosen stages of one replica's variables."""

    def __init__(self, model: StagedModel, mean: np.ndarray, std: np.ndarray, settings: CkaSettings):
        self.settings = settings
        self.stages = model.select_stages(settings.stages, 'analysis.cka.stages')
        stop = max(model.stage_index(s) for s in self.stages) + 1
        pooling = settings.pooling
        mean, std = jnp.asarray(mean), jnp.asarray(std)

        def capture(variables, images):
            run = model.apply(variables, normalize(images, mean, std, model.dtype), stop=stop,
                              capture=self.stages)
            out = []
            for name in self.stages:
                f = run.features[name].astype(jnp.float32)
                if pooling == 'mean' and f.ndim > 2:
                    f = jnp.mean(f, axis=tuple(range(1, f.ndim - 1)))
                out.append(f.reshape(f.shape[0], -1))
            return tuple(out)

        self._capture = jax.jit(capture)

    def features(self, variables, images: np.ndarray) -> tuple:
        """Stage features, tuple of L arrays [n, D_l], computed in forward batches."""
        step = self.settings.forward_batch
        parts = [self._capture(variables, images[i:i + step]) for i in range(0, images.shape[0], step)]
        return tuple(jnp.concatenate([p[l] for p in parts]) for l in range(len(self.stages)))

    def grams(self, variables, images: np.ndarray) -> list[jax.Array]:
        """One [L, b, b] per example batch (a single batch of all examples unless minibatch)."""
        s = self.settings
        batch = s.minibatch_size or images.shape[0]
        return [stacked_grams(self.features(variables, images[i:i + batch]), s.kernel, s.debiased, s.bandwidth)
                for i in range(0, images.shape[0] - batch + 1, batch)]


def block_ends(stage_names: tuple[str, ...]) -> list[int]:
    """Indices of stages that end a block (ResNet layerX groups, conv -> fc), for dashed lines."""
    def group(name: str) -> str:
        return name.split('.')[0] if '.' in name else name.rstrip('0123456789')
    return [i for i in range(len(stage_names) - 1) if group(stage_names[i]) != group(stage_names[i + 1])]
