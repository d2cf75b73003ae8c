"""Checkpoints of a run: every orbax call in memjax lives in this file.

Layout under `<workdir>/checkpoints/`:

    epochs/<t>/   params + batch_stats of all replicas at epoch t (t = 0 is the
                  initialisation), leaves [R, ...]; kept on the configured
                  schedule (every k epochs or an explicit list, always the first
                  and the last). Analyses read these.
    state/<t>/    the full training state of the latest epochs (params,
                  batch_stats, optimizer state, per-replica progress) for resume;
                  the newest two are kept, so a damaged newest one falls back to
                  the one before (the damaged one moves to damaged/).

Saves are asynchronous (orbax copies device arrays to host, then writes in a
background thread); `wait()` blocks until every save is on disk and runs before
anything reads a checkpoint or the process exits. Orbax writes to a temporary
folder and renames it when complete, so a save cut off by kill -9 is ignored on
restore and training resumes from the previous epoch.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from typing import Any, Callable

import jax
import numpy as np
import orbax.checkpoint as ocp

from memjax.errors import FileSystemError, MemjaxError, RunDirectoryError

# What the file system said, as orbax/tensorstore phrase it in their messages (errno names vary by layer).
_REASONS = (('No space left on device', 'no space left on device'), ("os_error_code='28'", 'no space left on device'),
            ('Disk quota exceeded', 'disk quota exceeded'), ('Read-only file system', 'read-only file system'),
            ('Permission denied', 'permission denied'), ('File too large', 'file too large'))


def write_failure_reason(error: BaseException) -> str:
    """A short reason for a failed write ('no space left on device', ...), from an exception chain."""
    seen = error
    while seen is not None:
        text = str(seen)
        for needle, reason in _REASONS:
            if needle in text:
                return reason
        seen = seen.__cause__ or seen.__context__
    text = str(error).strip().splitlines()
    return (text[0][:200] if text else type(error).__name__)


def keep_epoch(epoch: int, every: int, epochs: tuple = ()) -> bool:
    """Whether epoch's params are kept on the schedule (epoch 0 always is)."""
    if epoch == 0:
        return True
    if epochs:
        return epoch in set(int(e) for e in epochs)
    return every > 0 and epoch % every == 0


def _abstract(tree: Any) -> Any:
    return jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, tree)


class Checkpoints:
    """Per-epoch model snapshots and the resumable training state of one run."""

    def __init__(self, directory: str, async_save: bool = True):
        self.directory = os.path.abspath(directory)
        self.failed = False
        options = dict(enable_async_checkpointing=bool(async_save), create=True)
        self._epochs = ocp.CheckpointManager(os.path.join(self.directory, 'epochs'),
                                             options=ocp.CheckpointManagerOptions(**options))
        self._state = ocp.CheckpointManager(os.path.join(self.directory, 'state'),
                                            options=ocp.CheckpointManagerOptions(max_to_keep=2, **options))

    # Writing ---------------------------------------------------------------
    @contextlib.contextmanager
    def _writing(self, what: str):
        """Turns any failure of an orbax write (raised here or on its background threads, which
        orbax re-raises on the next save or wait) into one FileSystemError line."""
        try:
            yield
        except (MemjaxError, KeyboardInterrupt):
            raise
        except Exception as error:  # orbax/tensorstore raise ValueError, OSError, RuntimeError, ...
            self.failed = True
            raise FileSystemError(f"file system: could not write {what} under {self.directory} "
                                  f"({write_failure_reason(error)}); free space (or choose another --workdir) and "
                                  "rerun the same command to resume") from error

    def save_epoch(self, epoch: int, variables: dict) -> None:
        """Keeps `{'params', 'batch_stats'}` (leaves [R, ...]) of `epoch`."""
        with self._writing(f'checkpoints (saving epoch {epoch})'):
            if epoch not in self._epochs.all_steps():
                self._epochs.save(epoch, args=ocp.args.StandardSave(variables))

    def save_state(self, epoch: int, state: Any, progress: dict) -> None:
        """Saves the resumable state after `epoch` (older states are deleted)."""
        with self._writing(f'checkpoints (saving the state of epoch {epoch})'):
            self._state.save(epoch, args=ocp.args.StandardSave({'state': state, 'progress': progress}),
                             force=True)

    def wait(self) -> None:
        """Blocks until every save is on disk; a save that failed in the background raises here."""
        with self._writing('checkpoints'):
            self._epochs.wait_until_finished()
            self._state.wait_until_finished()

    def close(self, quiet: bool = False) -> None:
        """Waits for the saves and releases orbax's threads. quiet: after another failure, swallow
        this one (an unfinished save is never committed: orbax renames a checkpoint only when whole)."""
        try:
            self.wait()
        except FileSystemError:
            if not quiet:
                raise
        finally:
            for manager in (self._epochs, self._state):
                try:
                    manager.close()
                except Exception:  # already reported (or quiet): the manager may hold the same error
                    if not (quiet or self.failed):
                        raise

    # Reading ---------------------------------------------------------------
    def epochs(self) -> list[int]:
        """Epochs whose params are kept, ascending."""
        self._epochs.reload()
        return sorted(self._epochs.all_steps())

    def latest_state_epoch(self) -> int | None:
        self._state.reload()
        return self._state.latest_step()

    def restore_state(self, like_state: Any, like_progress: dict, log: Callable[[str], None] = print,
                      legacy_progress: dict | None = None) -> tuple[int, Any, dict] | None:
        """(epoch, state, progress) of the newest resumable state that restores, or None if there is none.

        `like_*` give the structure, shapes and dtypes (e.g. the initial state);
        `legacy_progress`, an older progress structure also accepted.
        A state that does not restore is moved to checkpoints/damaged/ with one
        line saying so, and the one before it is tried.

        Raises:
          RunDirectoryError: states exist but none restores.
        """
        self._state.reload()
        steps = sorted(self._state.all_steps(), reverse=True)
        targets = [_abstract({'state': like_state, 'progress': p}) for p in (like_progress, legacy_progress) if p]
        for epoch in steps:
            error = None
            for target in targets:
                try:
                    restored = self._state.restore(epoch, args=ocp.args.StandardRestore(target))
                    return epoch, restored['state'], restored['progress']
                except Exception as caught:  # orbax/tensorstore raise many types for damaged files
                    error = caught
            if error is not None:
                moved = self._set_aside('state', epoch)
                log(f'resumable state of epoch {epoch} does not restore ({type(error).__name__}); moved to '
                    f'{moved}, trying the one before')
        if steps:
            raise RunDirectoryError(f"no resumable state in {self.directory}/state restores (all moved to damaged/); "
                                    "train again in a new --workdir")
        return None

    def _set_aside(self, kind: str, epoch: int) -> str:
        source = os.path.join(self.directory, kind, str(epoch))
        target = os.path.join(self.directory, 'damaged', f'{kind}-{epoch}')
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if os.path.exists(target):
            shutil.rmtree(target)
        os.replace(source, target)
        (self._state if kind == 'state' else self._epochs).reload()
        return target

    def load_epoch(self, epoch: int) -> dict:
        """`{'params', 'batch_stats'}` of all replicas at `epoch`, NumPy leaves [R, ...]."""
        if epoch not in self.epochs():
            raise RunDirectoryError(
                f"no checkpoint of epoch {epoch} in {self.directory}; kept epochs: {self.epochs()} "
                "(set checkpoint.every / checkpoint.epochs before training to keep others)")
        try:
            restored = self._epochs.restore(epoch, args=ocp.args.StandardRestore(self._local_target(epoch)))
        except Exception as error:  # orbax/tensorstore raise many types for damaged files
            raise RunDirectoryError(f"the checkpoint of epoch {epoch} ({self.directory}/epochs/{epoch}) is damaged "
                                    f"({type(error).__name__}); retrain in a new --workdir, or remove that "
                                    "epoch from analysis.*.epochs") from error
        restored = jax.tree_util.tree_map(np.asarray, restored)
        restored.setdefault('batch_stats', {})
        return restored

    def check_epoch(self, epoch: int) -> None:
        """Raises RunDirectoryError (one line) unless epoch's checkpoint is present and its metadata reads."""
        if epoch not in self.epochs():
            raise RunDirectoryError(f"the checkpoint of epoch {epoch} is missing from {self.directory}/epochs, "
                                    "though status.json says the run kept it; retrain in a new --workdir")
        try:
            self._local_target(epoch)
        except Exception as error:
            raise RunDirectoryError(f"the checkpoint of epoch {epoch} ({self.directory}/epochs/{epoch}) is damaged "
                                    f"({type(error).__name__}); retrain in a new --workdir") from error

    def _local_target(self, epoch: int) -> Any:
        """The saved tree's shapes and dtypes on this process's first device.

        A run trained with replicas sharded over 8 devices restores on a
        machine with one (orbax would otherwise ask for the saved topology).
        """
        path = os.path.join(self.directory, 'epochs', str(epoch), 'default')
        metadata = ocp.StandardCheckpointer().metadata(path)
        tree = getattr(metadata, 'item_metadata', metadata)
        tree = getattr(tree, 'tree', tree)
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        return jax.tree_util.tree_map(lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=device), tree)

    def load_replica(self, epoch: int, replica: int) -> dict:
        """Variables of one replica at `epoch` (leaves without the R axis)."""
        return jax.tree_util.tree_map(lambda x: x[replica], self.load_epoch(epoch))

    def load_stage(self, epoch: int, replica: int, stage: str) -> dict:
        """`{'params': ..., 'batch_stats': ...}` of one stage of one replica at `epoch`."""
        variables = self.load_replica(epoch, replica)
        if stage not in variables['params']:
            raise RunDirectoryError(f"unknown stage {stage!r}; this run's stages are: "
                                    f"{', '.join(variables['params'])}")
        out = {'params': variables['params'][stage]}
        if stage in variables['batch_stats']:
            out['batch_stats'] = variables['batch_stats'][stage]
        return out
