"""What a run trains on: its data, replicas, labels and model, and the run directory's metadata.

`prepare_run` does everything that can fail on bad input before the run
directory is created (data, labels, the analyses' data checks), then takes the
directory's lock and writes (or, on resume, checks) the metadata set.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Callable

import jax
import numpy as np

from memjax.config import RunSettings, run_settings, to_dict
from memjax.data.dataset import Dataset, load_dataset
from memjax.data.facts import DataFacts, data_facts
from memjax.data.noise import NoisyLabels, noisy_labels
from memjax.data.replicas import Replica, make_replicas
from memjax.engine import processes
from memjax.errors import ConfigError, RunDirectoryError
from memjax.models import StagedModel, build_model
from memjax.rundir import RunDirectory


@dataclasses.dataclass
class Setup:
    """What a run trains on.

    Attributes:
      config: the config as given (written to config.json).
      settings: its training keys, typed.
      run: the run directory.
      dataset: the splits.
      replicas: the R replicas, in order.
      noise: their labels [R, N] and noise masks [R, N].
      model: the architecture (training dtype).
    """

    config: object
    settings: RunSettings
    run: RunDirectory
    dataset: Dataset
    replicas: list[Replica]
    noise: NoisyLabels
    model: StagedModel

    @property
    def steps_per_epoch(self) -> int:
        return self.dataset.num_train // self.settings.train.batch_size

    @property
    def noise_ratios(self) -> list[float]:
        return [r.noise_ratio for r in self.replicas]


def model_of(settings: RunSettings, num_classes: int, dtype: str | None = None) -> StagedModel:
    """The run's architecture (in `dtype`, default the training dtype)."""
    m = settings.model
    return build_model(m.name, num_classes, m.width, dtype or m.dtype, depth=m.depth, heads=m.heads, patch=m.patch)


def prepare_run(config, run: RunDirectory, stack: contextlib.ExitStack | None = None,
                check_data: Callable[[DataFacts], None] | None = None) -> Setup:
    """Loads data, draws the noisy labels, builds the model and writes (or checks) the run's metadata.

    Everything that can fail on bad input happens before the directory is
    created (`check_data(facts)`: the checks of the listed analyses that need
    the data), on every process of a job, which agree before going on; then the
    directory's lock is taken (held until `stack` closes). Every process loads
    the whole data set; process 0 writes the metadata.
    """
    with processes.together('loading the data'):
        settings, dataset, replicas, noise = _load(config, check_data)
    model = model_of(settings, dataset.num_classes)
    arrays = dict(true_labels=dataset.train_labels, labels=noise.labels, noise_mask=noise.mask,
                  train_index=dataset.train_index, val_index=dataset.val_index, test_index=dataset.test_index)
    if stack is not None:
        stack.enter_context(run.locked())
    run.create(to_dict(config))
    if not processes.primary():  # process 0 writes or checks the metadata for the job
        pass
    elif run.has_metadata():
        stored = run.load_noise()
        if any(not np.array_equal(stored[k], v) for k, v in arrays.items()):
            raise RunDirectoryError(f"the data or labels of {run.path} differ from the ones it was trained "
                                    "on (data files changed?); pass a new --workdir")
    else:  # new, or cut off while writing the set: (re)write it whole; it follows from config and data
        run.save_metadata(arrays, dataset.summary(), [r.to_dict() for r in replicas])
    processes.barrier('writing the metadata')
    return Setup(config, settings, run, dataset, replicas, noise, model)


def check_processes(settings: RunSettings, num_replicas: int) -> None:
    """With several processes the replicas are sharded over every device of every process: train.strategy
    must allow it and the replica count must split evenly."""
    if not processes.several():
        return
    devices = jax.device_count()
    if settings.train.strategy not in ('auto', 'shard'):
        raise ConfigError(f"train.strategy={settings.train.strategy!r} runs every replica on one process; with "
                          f"{processes.count()} processes use --config.train.strategy=shard (or auto)")
    if num_replicas % devices:
        raise ConfigError(f"{num_replicas} replicas do not split over the {devices} devices of {processes.count()} "
                          f"processes; use a multiple of {devices} replicas (noise.ratios x seeds) or fewer processes")


def _load(config, check_data):
    """(settings, dataset, replicas, noise), everything that can fail on bad input."""
    settings = run_settings(config)
    dataset = load_dataset(settings.data)
    replicas = make_replicas(settings)
    noise = noisy_labels(dataset.train_labels, dataset.num_classes, [r.noise_ratio for r in replicas],
                         [r.seed for r in replicas], settings.noise.seed, settings.noise.mode,
                         settings.noise.shared_across_seeds)
    if check_data is not None:
        check_data(data_facts(dataset, [r.noise_ratio for r in replicas], [r.seed for r in replicas], noise.labels,
                              noise.mask))
    batch_size, n = settings.train.batch_size, dataset.num_train
    if batch_size > n:
        raise ConfigError(f"train.batch_size={batch_size} is larger than the {n} training examples; "
                          "lower --config.train.batch_size or raise --config.data.num_train")
    check_processes(settings, len(replicas))
    return settings, dataset, replicas, noise
