"""What a run does after each epoch of training: hooks of `memjax.engine.fit`, in order.

1. `Evaluate`: one metrics row per replica (accuracies on every split and
   subset, the epoch's loss, whether it trained this epoch).
2. `InputGradientRecord` (train.input_gradients): P4's G per replica, a column of those rows.
3. `Health`: a replica whose loss or parameters are not finite stops (diverged);
   one that reached train.stop_accuracy stops (converged); the others go on.
4. `GradientRecord` (train.gradient_accounting): the epoch's clean and noisy
   gradient sums per parameter tensor, appended to gradients.jsonl; zeroed.
5. `Save`: the kept params, the metrics rows, the resumable state, status.json,
   and one line in the log.

Each hook names the files it appends rows to (`files`), which a resumed run
truncates to its last saved state, and the metrics columns it adds (`columns`).
They share one `Epoch` record of the epoch's rows.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from memjax.checkpoint import Checkpoints, keep_epoch
from memjax.engine.lifting import host, lift, per_replica, stacked
from memjax.train.gradient_split import rows_from_sums, tensor_sums
from memjax.train.metrics import epoch_metrics
from memjax.train.progress import epoch_line, job_estimate


@dataclasses.dataclass
class Progress:
    """Where each of R replicas stands (saved with the resumable state).

    Attributes:
      running: bool [R]: still training.
      converged_epoch: int32 [R]: the epoch it reached train.stop_accuracy (-1: not yet).
      diverged_epoch: int32 [R]: the epoch its loss or parameters became non-finite (-1: never).
    """

    running: np.ndarray
    converged_epoch: np.ndarray
    diverged_epoch: np.ndarray

    @classmethod
    def start(cls, size: int) -> 'Progress':
        return cls(np.ones(size, bool), np.full(size, -1, np.int32), np.full(size, -1, np.int32))

    def to_checkpoint(self) -> dict:
        """The checkpoint's (orbax) tree; `active` is the running flags' saved name."""
        return {'active': self.running, 'converged_epoch': self.converged_epoch, 'diverged_epoch': self.diverged_epoch}

    @classmethod
    def from_checkpoint(cls, tree: dict) -> 'Progress':
        size = len(tree['active'])
        return cls(np.array(tree['active'], bool), np.array(tree['converged_epoch'], np.int32),
                   np.array(tree.get('diverged_epoch', np.full(size, -1)), np.int32))


@dataclasses.dataclass
class Epoch:
    """The epoch the hooks are working on: its rows (one per replica) and when it started."""

    rows: list = dataclasses.field(default_factory=list)
    started: float = 0.0


@dataclasses.dataclass
class Evaluate:
    """Metrics rows of every replica, from one prediction of each on the run's image pool."""

    setup: Any
    runner: Any
    lifting: Any
    pool: jax.Array
    batch: int
    progress: Progress
    epoch: Epoch
    files: tuple = ('metrics.jsonl',)

    def rows(self, variables, epoch: int, losses) -> list[dict]:
        predictions = self.runner.predict_all(variables, self.pool, self.lifting, self.batch)
        data, noise = self.setup.dataset, self.setup.noise
        rows = epoch_metrics(predictions, noise.labels, data.train_labels, noise.mask, data.val_labels,
                             data.test_labels)
        for i, row in enumerate(rows):
            rep = self.setup.replicas[i]
            trained = losses is not None and bool(self.progress.running[i])
            row.update(epoch=epoch, replica=i, noise_ratio=rep.noise_ratio, seed=rep.seed,
                       train_loss=float(losses[i]) if trained else None, active=bool(self.progress.running[i]))
        return rows

    def before_epoch(self, fit, epoch: int) -> None:
        self.epoch.started = time.perf_counter()

    def after_epoch(self, fit, epoch: int, state, losses) -> Any:
        self.epoch.rows = self.rows(per_replica(state, lambda s: s.variables), epoch, losses)
        return state


@dataclasses.dataclass
class InputGradientRecord:
    """P4's input-gradient magnitude G of every replica (`memjax.train.input_gradients`), a metrics column."""

    meter: Any
    epoch: Epoch
    columns: tuple = ('input_gradient',)

    def after_epoch(self, fit, epoch: int, state, losses) -> Any:
        values = self.meter(per_replica(state, lambda s: s.variables))
        for row, value in zip(self.epoch.rows, values):
            row['input_gradient'] = float(value)
        return state


@jax.jit
def _finite_parameters(params) -> jax.Array:
    """bool [R]: every parameter [R, ...] of each replica is finite (one program per parameter tree, not one
    small program per leaf shape)."""
    return jax.tree_util.tree_reduce(
        jnp.logical_and, jax.tree_util.tree_map(lambda x: jnp.all(jnp.isfinite(x), axis=tuple(range(1, x.ndim))),
                                                params))


def finite_replicas(params, losses) -> np.ndarray:
    """bool [R]: every parameter [R, ...] and the epoch loss [R] of each replica are finite."""
    return host(_finite_parameters(params)) & np.isfinite(np.asarray(losses))


@dataclasses.dataclass
class Health:
    """Stops the replicas that diverged (non-finite) or converged (train.stop_accuracy reached)."""

    setup: Any
    progress: Progress
    epoch: Epoch
    stop_accuracy: float | None
    log: Callable

    def after_epoch(self, fit, epoch: int, state, losses) -> Any:
        ok = finite_replicas(stacked(per_replica(state, lambda s: s.params)), losses)
        progress = self.progress
        for i, row in enumerate(self.epoch.rows):
            if not row['active']:
                continue
            if not ok[i]:
                progress.running[i] = False
                progress.diverged_epoch[i] = epoch
                self.log(f'replica {self.setup.replicas[i].name} diverged at epoch {epoch} (non-finite loss or '
                         'parameters); it stops, the others go on')
            elif self.stop_accuracy is not None and row['train_accuracy'] >= self.stop_accuracy:
                progress.running[i] = False
                progress.converged_epoch[i] = epoch
        for i, row in enumerate(self.epoch.rows):
            row['diverged'] = bool(progress.diverged_epoch[i] >= 0)
        fit.running[:] = progress.running
        return state


@dataclasses.dataclass(frozen=True)
class _TensorSums:
    """One replica's clean/noisy gradient sums per parameter tensor (lifted over replicas)."""

    model: Any

    def __call__(self, sums):
        return tensor_sums(self.model, sums['clean'], sums['noisy'])


@dataclasses.dataclass
class GradientRecord:
    """P3's gradient accounting: the epoch's summed clean and noisy gradients, per tensor, to gradients.jsonl."""

    setup: Any
    lifting: Any
    epoch: Epoch
    files: tuple = ('gradients.jsonl',)

    def after_epoch(self, fit, epoch: int, state, losses) -> Any:
        program = lift(_TensorSums(self.setup.model), ('sums',), self.lifting)
        sums = host(stacked(program(sums=per_replica(state, lambda s: s.grad_sums))))
        trained = [row['active'] for row in self.epoch.rows]
        self.setup.run.append_metrics(rows_from_sums(sums, epoch, self.setup.replicas, trained), 'gradients.jsonl')
        return per_replica(state, lambda s: s.replace(grad_sums=jax.tree_util.tree_map(jnp.zeros_like, s.grad_sums)))


@dataclasses.dataclass
class Save:
    """Kept params (on the schedule, and the final epoch), metrics rows, resumable state, status; a log line."""

    setup: Any
    checkpoints: Checkpoints
    progress: Progress
    epoch: Epoch
    log: Callable
    timed: list = dataclasses.field(default_factory=list)  # seconds of each epoch this process trained

    def save(self, epoch: int, state_stacked, final: bool) -> None:
        keep = self.setup.settings.checkpoint
        if keep_epoch(epoch, keep.every, keep.epochs) or final:
            self.checkpoints.save_epoch(epoch, state_stacked.variables)
        # The rows go first: a state on disk promises its epoch's rows (resume truncates to the state's epoch).
        self.setup.run.append_metrics(self.epoch.rows)
        self.checkpoints.save_state(epoch, state_stacked, self.progress.to_checkpoint())
        self.setup.run.set_status(status='training', epoch=epoch)

    def after_epoch(self, fit, epoch: int, state, losses) -> Any:
        train = self.setup.settings.train
        final = not self.progress.running.any() or epoch == train.epochs
        self.save(epoch, stacked(state), final=final)
        seconds = time.perf_counter() - self.epoch.started
        if epoch == 0:  # the initialisation, evaluated
            self.log(epoch_line(epoch, train.epochs, self.epoch.rows, seconds))
            return state
        self.timed.append(seconds)
        # the first epoch of a process compiles: the later ones give the rate (an upper bound: replicas may stop)
        rate = self.timed[0] if len(self.timed) == 1 else sum(self.timed[1:]) / (len(self.timed) - 1)
        self.log(epoch_line(epoch, train.epochs, self.epoch.rows, seconds, None if final else
                            rate * (train.epochs - epoch)))
        if len(self.timed) == 1 and epoch == 1 and train.reference_time and not final:
            self.log(job_estimate(seconds, train.reference_time))
        return state
