"""A trained run, opened for analysis: config, data, labels, model, checkpoints.

Analyses never retrain the base models; they open the run directory with
`open_run(workdir)` and read what training wrote. The helpers here are the
one place where replicas are picked out of checkpoints, kept epochs chosen,
clean partners found, result rows labelled and image pools split.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from memjax.checkpoint import Checkpoints, keep_epoch
from memjax.config import RunSettings, run_settings
from memjax.data.dataset import Dataset, load_dataset
from memjax.data.facts import DataFacts, data_facts
from memjax.data.replicas import Replica
from memjax.errors import ConfigError, RunDirectoryError
from memjax.engine.runner import ModelRunner, runner_for
from memjax.models import StagedModel, build_model
from memjax.rundir import RunDirectory, read_json

SPLITS = ('train', 'val', 'test')

# Analyses run the models in float32 whatever `model.dtype` trained them: the
# params are float32 either way, and bfloat16 activations (8 bits of mantissa)
# would add rounding noise to CKA features, to the least-squares stitch
# initialisation and to accuracies. Recorded in results/<name>/complete.json.
ANALYSIS_DTYPE = 'float32'


@dataclasses.dataclass(frozen=True)
class ImagePool:
    """Named splits concatenated on the device, so many models run over all of them at once.

    Attributes:
      images: uint8 [P, H, W, C], the splits in `names` order.
      names: the splits, e.g. ('train', 'test').
      sizes: examples of each split.
    """

    images: jax.Array
    names: tuple[str, ...]
    sizes: tuple[int, ...]

    def indices(self, split: str) -> np.ndarray:
        """Positions [n] of `split`'s examples in the pool."""
        k = self.names.index(split)
        start = sum(self.sizes[:k])
        return np.arange(start, start + self.sizes[k])

    def part(self, values: np.ndarray, split: str) -> np.ndarray:
        """The entries of `values` [..., P] that belong to `split`."""
        positions = self.indices(split)
        return values[..., positions[0]:positions[-1] + 1] if positions.size else values[..., :0]


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
    def settings(self) -> RunSettings:
        """The run's training keys, typed (`memjax.config.run_settings`)."""
        return run_settings(self.config)

    @functools.cached_property
    def dataset(self) -> Dataset:
        data = load_dataset(self.config.data)
        if not np.array_equal(data.train_index, self.noise['train_index']):
            raise RunDirectoryError('the data set no longer matches the run (train_index differs); '
                                    'restore the data files it was trained on')
        return data

    @functools.cached_property
    def model(self) -> StagedModel:
        """The run's architecture computing in ANALYSIS_DTYPE (float32), whatever dtype trained it."""
        m = self.config.model
        return build_model(m.name, self.dataset.num_classes, m.width, ANALYSIS_DTYPE, depth=m.get('depth'),
                           heads=m.get('heads'), patch=m.get('patch'))

    @property
    def runner(self) -> ModelRunner:
        """The process's runner of the run's model (float32) with its normalisation (`memjax.engine.runner`)."""
        return runner_for(self.model, self.dataset.mean, self.dataset.std)

    @property
    def analysis_dtype(self) -> str:
        return ANALYSIS_DTYPE

    @functools.cached_property
    def checkpoints(self) -> Checkpoints:
        return Checkpoints(self.directory.checkpoint_dir)

    # Epochs and variables --------------------------------------------------
    def epochs(self) -> list[int]:
        return self.checkpoints.epochs()

    def final_epoch(self) -> int:
        return self.epochs()[-1]

    def kept_epochs(self, requested: tuple, key: str) -> list[int]:
        """The kept epochs named by setting `key` (all when empty); one error line for missing ones."""
        kept = self.epochs()
        missing = [e for e in requested if e not in kept]
        if missing:
            raise ConfigError(f"{key}={tuple(requested)} asks for epochs that were not kept ({missing}); kept: "
                              f"{kept}")
        return [e for e in kept if not requested or e in requested]

    def variables(self, epoch: int, replicas=None):
        """Variables of the given replica indices at `epoch`, stacked [K, ...] on the device (all if None)."""
        stacked = self.checkpoints.load_epoch(epoch)
        if replicas is None:
            return jax.tree_util.tree_map(jnp.asarray, stacked)
        index = np.asarray(list(replicas))
        return jax.tree_util.tree_map(lambda x: jnp.asarray(x[index]), stacked)

    def replica_variables(self, epoch: int, replica: int):
        """One replica's variables at `epoch` (no replica axis)."""
        return jax.tree_util.tree_map(lambda x: jnp.asarray(x[replica]), self.checkpoints.load_epoch(epoch))

    def verify(self) -> None:
        """Refuses (one line) a run that analyses would misread.

        A replica that diverged, or an epoch checkpoint that status.json
        promises (on the config's schedule, and the final epoch) but that is
        missing or unreadable.
        """
        status = self.directory.status()
        if status.get('diverged'):
            raise RunDirectoryError(f"{', '.join(status['diverged'])} diverged during training (status.json); "
                                    "analyses need finite models: train again with a lower learning rate")
        final = int(status.get('epoch', -1))
        if status.get('status') != 'complete' or final < 0:
            raise RunDirectoryError(f"{self.directory.path} is not fully trained (status {status.get('status')!r}); "
                                    "rerun the training command to finish it")
        keep = self.config.checkpoint
        promised = [t for t in range(final + 1) if keep_epoch(t, int(keep.every), tuple(keep.epochs))] + [final]
        for epoch in sorted(set(promised)):
            self.checkpoints.check_epoch(epoch)

    def data_facts(self) -> DataFacts:
        """The run's data and labels as the start-up checks see them (`memjax.data.facts`)."""
        return data_facts(self.dataset, [r.noise_ratio for r in self.replicas], [r.seed for r in self.replicas],
                          self.noise['labels'], self.noise['noise_mask'])

    # Replicas --------------------------------------------------------------
    def row(self, replica: int) -> dict:
        """The columns that name a replica in every result table."""
        rep = self.replicas[replica]
        return {'replica': rep.index, 'noise_ratio': rep.noise_ratio, 'seed': rep.seed}

    def noisy_replicas(self, analysis: str) -> list[Replica]:
        """The replicas with r > 0; a clear error for an analysis that needs one."""
        noisy = [rep for rep in self.replicas if rep.noise_ratio > 0]
        if not noisy:
            raise ConfigError(f'{analysis} needs a noisy replica (r > 0) in noise.ratios')
        return noisy

    def clean_partner(self, replica: int, analysis: str) -> int:
        """The r = 0 replica of the same seed as `replica`."""
        seed = self.replicas[replica].seed
        for rep in self.replicas:
            if rep.noise_ratio == 0.0 and rep.seed == seed:
                return rep.index
        raise ConfigError(f"{analysis} needs a clean replica (r = 0) for seed {seed}; add 0.0 to noise.ratios")

    def seed_groups(self, analysis: str) -> list[tuple[int, list[int]]]:
        """[(clean replica, [noisy replicas of the same seed])], one per seed that has both."""
        groups = []
        for seed in sorted({r.seed for r in self.replicas}):
            clean = [r.index for r in self.replicas if r.seed == seed and r.noise_ratio == 0.0]
            noisy = [r.index for r in self.replicas if r.seed == seed and r.noise_ratio > 0.0]
            if clean and noisy:
                groups.append((clean[0], noisy))
        if not groups:
            raise ConfigError(f'{analysis} needs a clean (r = 0) and a noisy replica of the same seed; '
                              'set noise.ratios to include 0.0 and at least one r > 0')
        return groups

    def replica_index(self, noise_ratio: float, seed: int) -> int:
        for rep in self.replicas:
            if abs(rep.noise_ratio - noise_ratio) < 1e-9 and rep.seed == seed:
                return rep.index
        raise KeyError(f'no replica with r={noise_ratio}, seed={seed}')

    # Images ----------------------------------------------------------------
    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(images uint8 [n, H, W, C], labels [n]) of a split; train labels are the TRUE labels."""
        data = self.dataset
        return {'train': (data.train_images, data.train_labels), 'val': (data.val_images, data.val_labels),
                'test': (data.test_images, data.test_labels)}[name]

    def image_pool(self, *names: str, limits: dict | None = None) -> ImagePool:
        """The named splits (each cut to `limits[name]` examples if given) as one device array."""
        limits = limits or {}
        parts = [self.split(name)[0][:limits.get(name)] for name in names]
        return ImagePool(jnp.asarray(np.concatenate(parts)), tuple(names), tuple(p.shape[0] for p in parts))


def open_run(workdir: str) -> Run:
    """Opens a trained (or partially trained) run directory."""
    directory = RunDirectory.existing(workdir)
    if not directory.has_metadata():
        raise RunDirectoryError(f"the metadata of {directory.path} is incomplete (no metadata.json); rerun the "
                                "training command on it to repair it")
    config = ml_collections.ConfigDict(directory.config_dict())
    replicas = [Replica(int(r['index']), float(r['noise_ratio']), int(r['seed']))
                for r in read_json(directory.file('replicas.json'))]
    return Run(directory, config, replicas, directory.load_noise())
