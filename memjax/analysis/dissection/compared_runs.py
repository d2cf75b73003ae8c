"""The runs and models the dissimilarity analysis compares.

- `check_other_runs`: every entry of `analysis.dissimilarity.other_runs` is
  refused (one ConfigError line) unless it is a finished (status.json
  complete), verified (`Run.verify`: its promised checkpoints are there) run
  that did not diverge, is not this run itself (resolved real paths), and
  holds images of this run's shape and classes. Duplicates are dropped. It
  runs at start-up (`Settings.check_workdir`, before this run trains), so a bad
  entry costs no work; this run's shape comes from its config (the named data
  sets' shapes are known) or, for a trained run, its data.json.
- `label_fingerprints`: one string per replica naming the training data and
  the exact label array it trained on; two models share their labels (P4's
  "same X_R") exactly when their fingerprints are equal.
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np

from memjax.errors import ConfigError, RunDirectoryError
from memjax.run import Run, open_run
from memjax.rundir import RunDirectory, read_json

KEY = 'analysis.dissimilarity.other_runs'

# (image shape, classes) of the named data sets: this run's shape before its data loads.
NAMED_DATA = {'mnist': ((28, 28, 1), 10), 'fashion_mnist': ((28, 28, 1), 10), 'cifar10': ((32, 32, 3), 10),
              'cifar100': ((32, 32, 3), 100), 'svhn_cropped': ((32, 32, 3), 10)}


def unique_paths(paths) -> list[str]:
    """The real paths of `paths`, in order, each once."""
    seen: list[str] = []
    for path in paths:
        real = os.path.realpath(path)
        if real not in seen:
            seen.append(real)
    return seen


def _data_shape(config, workdir: str | None) -> tuple[list, int] | None:
    """(image shape, classes) of this run: its data.json if trained, else from the config; None if unknown."""
    if workdir and os.path.exists(os.path.join(workdir, 'data.json')):
        data = read_json(os.path.join(workdir, 'data.json'))
        return list(data['image_shape']), int(data['num_classes'])
    if config is None:
        return None
    data = config.data
    if data.source == 'synthetic':
        return list(data.image_shape), int(data.num_classes)
    known = NAMED_DATA.get(data.name)
    return (list(known[0]), known[1]) if known else None


def _check_trained(path: str) -> None:
    """One line unless `path` holds a finished run without diverged replicas and with its checkpoints."""
    directory = RunDirectory(path)
    if not os.path.exists(directory.file('config.json')):
        raise ConfigError(f"{KEY} has {path!r}, which holds no memjax run (no config.json); give the --workdir "
                          "of a trained run")
    status = directory.status()
    if status.get('diverged'):
        raise ConfigError(f"{KEY} has {path!r}, whose replicas {', '.join(status['diverged'])} diverged "
                          "(non-finite models); remove it from other_runs or retrain it in a new --workdir")
    if status.get('status') != 'complete':
        epochs = directory.config_dict().get('train', {}).get('epochs')
        raise ConfigError(f"{KEY} has {path!r}, which is not fully trained (epoch {status.get('epoch')} of "
                          f"{epochs}, status {status.get('status')!r}); rerun its training command to finish it, "
                          "or remove it from other_runs")
    try:
        open_run(path).verify()
    except RunDirectoryError as error:
        raise ConfigError(f"{KEY} has {path!r}, which cannot be compared: {error}") from error


def check_other_runs(paths, workdir: str | None = None, config=None) -> list[str]:
    """Checks the other runs against each other and against this run; returns their unique real paths.

    Args:
      paths: the entries of other_runs.
      workdir: this run's work directory (None: not known; the self-check is skipped).
      config: this run's config (its data shape before the data loads), or None.

    Raises:
      ConfigError: one line naming the entry, what is wrong and the fix.
    """
    mine = _data_shape(config, workdir)
    here = os.path.realpath(workdir) if workdir else None
    first = None
    for path in unique_paths(paths):
        if path == here:
            raise ConfigError(f"{KEY} has {path!r}, which is this run's own --workdir (its replicas are compared "
                              "already); remove it from other_runs")
        _check_trained(path)
        data = read_json(os.path.join(path, 'data.json'))
        theirs = (list(data['image_shape']), int(data['num_classes']))
        reference, whose = (mine, 'this run') if mine is not None else (first, 'the first other run')
        if reference is not None and theirs != tuple(reference):
            raise ConfigError(f"{KEY} has {path!r}, whose images are {theirs[0]} with {theirs[1]} classes, but "
                              f"{whose}'s are {reference[0]} with {reference[1]} classes; compare runs on the "
                              "same data")
        first = first or theirs
    return unique_paths(paths)


def label_fingerprints(run: Run) -> list[str]:
    """Per replica: a digest of the run's training data (data.json: name, shape, classes, sizes,
    normalisation statistics; the training indices and true labels) and of the replica's label array
    `[N]`. Equal strings: the same training images with identical labels."""
    data = read_json(run.directory.file('data.json'))
    base = hashlib.sha256(json.dumps(data, sort_keys=True).encode())
    for name in ('train_index', 'true_labels'):
        base.update(np.ascontiguousarray(run.noise[name], np.int64).tobytes())
    prints = []
    for labels in run.noise['labels']:
        digest = base.copy()
        digest.update(np.ascontiguousarray(labels, np.int64).tobytes())
        prints.append(digest.hexdigest())
    return prints
