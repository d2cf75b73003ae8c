"""The run directory: the interface between training and every analysis.

    <workdir>/
      .lock              held (fcntl) by the memjax process working on the run
      config.json        the resolved config of the run
      status.json        {'status': 'training' | 'complete', 'epoch': t, 'diverged': [...], ...}
      metadata.json      written last, after data.json, replicas.json and noise.npz: the set is whole
      data.json          split sizes, normalisation statistics, source
      replicas.json      [{'index', 'noise_ratio', 'seed'}, ...]
      noise.npz          true_labels [N], labels [R, N], noise_mask [R, N],
                         train_index [N], val_index [V], test_index [M]
      metrics.jsonl      one line per (epoch, replica), strict JSON (non-finite values are null)
      strategy.json      the replica strategy used and, for 'auto', its timings
      summary.txt/.csv   the final table
      checkpoints/       see memjax.checkpoint
      results/<name>/    analyses' arrays and tables
      figures/           analyses' figures

In a job of several processes (`memjax.engine.processes`) process 0 writes every
file here and holds the lock; the others only read (orbax's checkpoints are
written by all processes together).

A work directory is never silently overwritten: opening one that holds a run of
a different config, or unrelated files, is an error.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
from typing import Any

import numpy as np

from memjax.config import config_differences
from memjax.engine.processes import writes
from memjax.errors import RunDirectoryError


METADATA_FILES = ('noise.npz', 'data.json', 'replicas.json')
_HELD_LOCKS: dict[str, int] = {}


def finite(value: Any) -> Any:
    """The value with every non-finite float replaced by None (strict JSON has no NaN/Infinity)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def write_text(path: str, text: str) -> None:
    """Writes a text file atomically (temporary file, fsync, rename): a full disk leaves the old one.
    Only process 0 of a job writes (the others return)."""
    if not writes():
        return
    tmp = path + '.tmp'
    try:
        with open(tmp, 'w', newline='') as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    os.replace(tmp, path)


def write_json(path: str, data: Any) -> None:
    """Writes strict JSON atomically (see `write_text`)."""
    write_text(path, json.dumps(finite(data), indent=2, sort_keys=True, allow_nan=False) + '\n')


def read_json(path: str) -> Any:
    with open(path) as f:
        return json.load(f)


class RunDirectory:
    """Paths and small records of one run directory."""

    def __init__(self, path: str):
        self.path = os.path.abspath(path)

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    @property
    def checkpoint_dir(self) -> str:
        return self.file('checkpoints')

    def results_dir(self, analysis: str) -> str:
        path = os.path.join(self.path, 'results', analysis)
        os.makedirs(path, exist_ok=True)
        return path

    @property
    def figures_dir(self) -> str:
        path = self.file('figures')
        os.makedirs(path, exist_ok=True)
        return path

    # Opening ---------------------------------------------------------------
    def check_compatible(self, config_dict: dict) -> None:
        """Raises unless the directory is new, empty, or holds a run of the same config.

        Raises:
          RunDirectoryError: the directory holds a different config's run, or
            files that are not a memjax run. Nothing is written either way.
        """
        config_path = self.file('config.json')
        if os.path.exists(config_path):
            differences = config_differences(read_json(config_path), config_dict)
            if differences:
                shown = '; '.join(differences[:3]) + (' ...' if len(differences) > 3 else '')
                raise RunDirectoryError(
                    f"workdir {self.path} holds a run of another config ({shown}); pass a new "
                    "--workdir, or delete that directory to start over")
        elif os.path.isdir(self.path) and set(os.listdir(self.path)) - {'.lock'}:
            raise RunDirectoryError(
                f"workdir {self.path} is not empty and holds no memjax run (no config.json); "
                "pass an empty or new --workdir")

    def create(self, config_dict: dict) -> None:
        """Creates the directory and its config.json (kept if it exists: same config).

        Checks the directory again under the lock; in a job of several processes only process 0 does, as
        it is the one writing there (every process checked before the lock was taken, and the others
        would see its files half written)."""
        if not writes():
            return
        self.check_compatible(config_dict)
        os.makedirs(self.path, exist_ok=True)
        if not os.path.exists(self.file('config.json')):
            write_json(self.file('config.json'), config_dict)

    @classmethod
    def existing(cls, path: str) -> 'RunDirectory':
        run = cls(path)
        if not os.path.exists(run.file('config.json')):
            raise RunDirectoryError(f"{run.path} holds no memjax run (no config.json); train one with "
                                    f"python -m memjax.main --config=... --workdir={path}")
        return run

    @contextlib.contextmanager
    def locked(self):
        """Holds an exclusive lock on the work directory for the block (re-entrant in one process).

        A lock left by a dead process is released by the kernel, so it is taken
        over safely. Raises RunDirectoryError naming the holder's pid when a
        live process holds it.
        """
        if self.path in _HELD_LOCKS or not writes():  # process 0 of a job holds it for all
            yield self
            return
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise RunDirectoryError(f"workdir {self.path} is a file, not a directory; pass another --workdir")
        os.makedirs(self.path, exist_ok=True)
        fd = os.open(self.file('.lock'), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors='replace').strip() or 'unknown'
            os.close(fd)
            raise RunDirectoryError(f"workdir {self.path} is in use by another memjax process (pid {holder}); "
                                    "wait for it to finish or pass another --workdir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f'{os.getpid()}\n'.encode(), 0)
        _HELD_LOCKS[self.path] = fd
        try:
            yield self
        finally:
            del _HELD_LOCKS[self.path]
            os.close(fd)

    # Records ---------------------------------------------------------------
    def config_dict(self) -> dict:
        return read_json(self.file('config.json'))

    def status(self) -> dict:
        path = self.file('status.json')
        return read_json(path) if os.path.exists(path) else {'status': 'new', 'epoch': -1}

    def set_status(self, **status) -> None:
        write_json(self.file('status.json'), status)

    def save_noise(self, **arrays: np.ndarray) -> None:
        if not writes():
            return
        tmp = self.file('noise.tmp.npz')
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, self.file('noise.npz'))

    def has_metadata(self) -> bool:
        """Whether the metadata set (noise.npz, data.json, replicas.json) was written whole."""
        return os.path.exists(self.file('metadata.json'))

    def save_metadata(self, arrays: dict, data_summary: dict, replicas: list[dict]) -> None:
        """Writes the metadata set, each file atomically, and marks it whole last."""
        self.save_noise(**arrays)
        write_json(self.file('data.json'), data_summary)
        write_json(self.file('replicas.json'), replicas)
        write_json(self.file('metadata.json'), {'files': list(METADATA_FILES)})

    def load_noise(self) -> dict[str, np.ndarray]:
        with np.load(self.file('noise.npz')) as data:
            return {k: data[k] for k in data.files}

    # Metrics ---------------------------------------------------------------
    @property
    def metrics_path(self) -> str:
        return self.file('metrics.jsonl')

    def append_metrics(self, rows: list[dict], name: str = 'metrics.jsonl') -> None:
        if not writes():
            return
        with open(self.file(name), 'a') as f:
            for row in rows:
                f.write(json.dumps(finite(row), sort_keys=True, allow_nan=False) + '\n')
            f.flush()
            os.fsync(f.fileno())

    def read_metrics(self, name: str = 'metrics.jsonl') -> list[dict]:
        path = self.file(name)
        if not os.path.exists(path):
            return []
        with open(path) as f:
            lines = f.read().split('\n')
        rows = []
        for k, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                if k == len(lines) - 1:  # a line cut off by a kill while appending; redone on resume
                    continue
                raise RunDirectoryError(f"{path} line {k + 1} is not JSON; the run directory is damaged") from None
        return rows

    def truncate_metrics(self, last_epoch: int, name: str = 'metrics.jsonl') -> None:
        """Drops rows after `last_epoch` (written before an interruption, then redone)."""
        path = self.file(name)
        if not os.path.exists(path) or not writes():
            return
        rows = [r for r in self.read_metrics(name) if r['epoch'] <= last_epoch]
        with open(path + '.tmp', 'w') as f:
            for row in rows:
                f.write(json.dumps(finite(row), sort_keys=True, allow_nan=False) + '\n')
            f.flush()
            os.fsync(f.fileno())
        os.replace(path + '.tmp', path)

    def last_metrics_epoch(self, name: str = 'metrics.jsonl') -> int:
        """The highest epoch with rows (-1 when none)."""
        return max((r['epoch'] for r in self.read_metrics(name)), default=-1)
