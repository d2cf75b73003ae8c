"""The run directory: the interface between training and every analysis.

    <workdir>/
      config.json        the resolved config of the run
      status.json        {'status': 'training' | 'complete', 'epoch': t, ...}
      data.json          split sizes, normalisation statistics, source
      replicas.json      [{'index', 'noise_ratio', 'seed'}, ...]
      noise.npz          true_labels [N], labels [R, N], noise_mask [R, N],
                         train_index [N], val_index [V], test_index [M]
      metrics.jsonl      one line per (epoch, replica)
      strategy.json      the replica strategy used and, for 'auto', its timings
      summary.txt/.csv   the final table
      checkpoints/       see memjax.checkpoint
      results/<name>/    analyses' arrays and tables
      figures/           analyses' figures

A work directory is never silently overwritten: opening one that holds a run of
a different config, or unrelated files, is an error.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from memjax.config import config_differences
from memjax.errors import RunDirectoryError


def write_json(path: str, data: Any) -> None:
    """Writes JSON atomically (temporary file + rename)."""
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write('\n')
    os.replace(tmp, path)


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
        elif os.path.isdir(self.path) and os.listdir(self.path):
            raise RunDirectoryError(
                f"workdir {self.path} is not empty and holds no memjax run (no config.json); "
                "pass an empty or new --workdir")

    def create(self, config_dict: dict) -> None:
        """Creates the directory and its config.json (kept if it exists: same config)."""
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

    # Records ---------------------------------------------------------------
    def config_dict(self) -> dict:
        return read_json(self.file('config.json'))

    def status(self) -> dict:
        path = self.file('status.json')
        return read_json(path) if os.path.exists(path) else {'status': 'new', 'epoch': -1}

    def set_status(self, **status) -> None:
        write_json(self.file('status.json'), status)

    def save_noise(self, **arrays: np.ndarray) -> None:
        tmp = self.file('noise.tmp.npz')
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, self.file('noise.npz'))

    def load_noise(self) -> dict[str, np.ndarray]:
        with np.load(self.file('noise.npz')) as data:
            return {k: data[k] for k in data.files}

    # Metrics ---------------------------------------------------------------
    @property
    def metrics_path(self) -> str:
        return self.file('metrics.jsonl')

    def append_metrics(self, rows: list[dict], name: str = 'metrics.jsonl') -> None:
        with open(self.file(name), 'a') as f:
            for row in rows:
                f.write(json.dumps(row, sort_keys=True) + '\n')
            f.flush()
            os.fsync(f.fileno())

    def read_metrics(self, name: str = 'metrics.jsonl') -> list[dict]:
        path = self.file(name)
        if not os.path.exists(path):
            return []
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]

    def truncate_metrics(self, last_epoch: int, name: str = 'metrics.jsonl') -> None:
        """Drops rows after `last_epoch` (written before an interruption, then redone)."""
        path = self.file(name)
        if not os.path.exists(path):
            return
        rows = [r for r in self.read_metrics(name) if r['epoch'] <= last_epoch]
        with open(path + '.tmp', 'w') as f:
            for row in rows:
                f.write(json.dumps(row, sort_keys=True) + '\n')
        os.replace(path + '.tmp', path)
