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

from memjax.analysis.cka import stacked_grams
from memjax.data.pipeline import normalize
from memjax.analysis.settings import AnalysisSettings
from memjax.errors import ConfigError
from memjax.models import StagedModel

ESTIMATORS = ('linear', 'debiased', 'rbf', 'rbf_debiased')
POOLINGS = ('flatten', 'mean')
SPLITS = ('test', 'val', 'train')


@dataclasses.dataclass(frozen=True)
class CkaSettings(AnalysisSettings):
    """How representations are compared (config: `analysis.cka`)."""

    split: str = 'test'
    num_examples: int = 1000
    estimator: str = 'linear'
    bandwidth: float = 0.5
    pooling: str = 'flatten'
    minibatch_size: int | None = None
    forward_batch: int = 500
    stages: tuple = ()
    epochs: tuple = ()

    @property
    def kernel(self) -> str:
        return 'rbf' if self.estimator.startswith('rbf') else 'linear'

    @property
    def debiased(self) -> bool:
        return self.estimator.endswith('debiased')


    def validate(self) -> None:
        if self.split not in SPLITS:
            raise ConfigError(f"analysis.cka.split={self.split!r}; use one of: {', '.join(SPLITS)}")
        if self.estimator not in ESTIMATORS:
            raise ConfigError(f"analysis.cka.estimator={self.estimator!r}; use one of: {', '.join(ESTIMATORS)}")
        if self.pooling not in POOLINGS:
            raise ConfigError(f"analysis.cka.pooling={self.pooling!r}; use 'flatten' (the papers) or 'mean'")
        batch = self.minibatch_size or self.num_examples
        if self.num_examples % batch:
            raise ConfigError(f"analysis.cka.num_examples={self.num_examples} must be a multiple of "
                              f"analysis.cka.minibatch_size={batch}")
        if batch < 4:
            raise ConfigError(f"analysis.cka needs at least 4 examples per batch, got {batch}")


def split_examples(run, split: str, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The first `count` examples of a split: (images uint8 [n, H, W, C], labels [n])."""
    data = run.dataset
    images, labels = {'test': (data.test_images, data.test_labels), 'val': (data.val_images, data.val_labels),
                      'train': (data.train_images, data.train_labels)}[split]
    if count > images.shape[0]:
        raise ConfigError(f"analysis.cka.num_examples={count} is more than the {images.shape[0]} examples "
                          f"of the {split} split; lower it")
    return images[:count], labels[:count]


def resolve_stages(model: StagedModel, stages: tuple) -> tuple[str, ...]:
    names = tuple(stages) or model.stage_names
    for name in names:
        model.stage_index(name)  # clear error for unknown names
    return tuple(sorted(names, key=model.stage_index))


class GramMaker:
    """Transformed Grams [L, n, n] of the chosen stages of one replica's variables."""

    def __init__(self, model: StagedModel, mean: np.ndarray, std: np.ndarray, settings: CkaSettings):
        self.settings = settings
        self.stages = resolve_stages(model, settings.stages)
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
