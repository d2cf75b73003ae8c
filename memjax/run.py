"""A trained run, opened for analysis: config, data, labels, model, checkpoints.

Analyses never retrain the base models; they open the run directory with
`open_run(workdir)` and read what training wrote.
"""

from __future__ import annotations

import dataclasses
import functools

import ml_collections
import numpy as np

from memjax.checkpoint import Checkpoints
from memjax.data.dataset import Dataset, load_dataset
from memjax.errors import ConfigError
from memjax.models import StagedModel, build_model
from memjax.rundir import RunDirectory, read_json
from memjax.train.replicas import Replica


def load_run_data(config) -> Dataset:
    return load_dataset(config.data)


def build_run_model(config, num_classes: int) -> StagedModel:
    m = config.model
    return build_model(m.name, num_classes, m.width, m.dtype, depth=m.depth, heads=m.heads, patch=m.patch)


@dataclasses.dataclass
class Run:
    """A run directory opened for analysis.

    Attributes:
      directory: the RunDirectory.
      config: the run's config (as trained).
      replicas: the R replicas, in checkpoint order.
      noise: 'labels' [R, N], 'noise_mask' [R, N], 'true_labels' [N], split indices.
    """

    directory: RunDirectory
    config: ml_collections.ConfigDict
    replicas: list[Replica]
    noise: dict

    @functools.cached_property
    def dataset(self) -> Dataset:
        data = load_run_data(self.config)
        if not np.array_equal(data.train_index, self.noise['train_index']):
            raise RuntimeError('the data set no longer matches the run (train_index differs)')
        return data

    @functools.cached_property
    def model(self) -> StagedModel:
        return build_run_model(self.config, self.dataset.num_classes)

    @functools.cached_property
    def checkpoints(self) -> Checkpoints:
        return Checkpoints(self.directory.checkpoint_dir)

    def epochs(self) -> list[int]:
        return self.checkpoints.epochs()

    def final_epoch(self) -> int:
        return self.epochs()[-1]

    def noisy_replicas(self, analysis: str) -> list[Replica]:
        """The replicas with r > 0; a clear error for an analysis that needs one."""
        noisy = [rep for rep in self.replicas if rep.noise_ratio > 0]
        if not noisy:
            raise ConfigError(f'{analysis} needs a noisy replica (r > 0) in noise.ratios')
        return noisy

    def replica_index(self, noise_ratio: float, seed: int) -> int:
        for rep in self.replicas:
            if abs(rep.noise_ratio - noise_ratio) < 1e-9 and rep.seed == seed:
                return rep.index
        raise KeyError(f'no replica with r={noise_ratio}, seed={seed}')


def open_run(workdir: str) -> Run:
    """Opens a trained (or partially trained) run directory."""
    directory = RunDirectory.existing(workdir)
    config = ml_collections.ConfigDict(directory.config_dict())
    replicas = [Replica(int(r['index']), float(r['noise_ratio']), int(r['seed']))
                for r in read_json(directory.file('replicas.json'))]
    return Run(directory, config, replicas, directory.load_noise())
