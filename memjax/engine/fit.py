"""One fit loop for everything memjax trains: runs, units of runs, stitch layers, example-tied models.

A *trainable* is a value-hashable object (a frozen dataclass) with

    step(state, *, idx, weights, epoch, step, **data) -> (state, loss)

for ONE model and one batch: `idx` int32 [B] are the batch's examples
(positions in the data it is given), `weights` float32 [B] their loss weights
(0 for padding), `data` whatever else it reads (image pool, labels, keys,
frozen models). `fit` lifts it over the models (`memjax.engine.lifting`),
runs `chunk_steps` steps per compiled call (a `lax.scan` when more than one),
visits each epoch's `Batches`, and calls its hooks after every epoch. Models
whose epoch is shorter than the longest (stage training on example sets of
different sizes) idle for the remaining steps; models that are not running
(converged, diverged) are not stepped at all.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable, Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from memjax.engine.lifting import Lifting, count, host, lift, stacked


@dataclasses.dataclass(frozen=True)
class Batches:
    """One epoch's data order for R models.

    Attributes:
      order: int32 [R, S * B] (or [S * B] when every model shares it): step s of a model uses
        order[..., s * B:(s + 1) * B].
      steps: int [R]: steps each model takes this epoch (at most S); a model idles after its last.
      weights: float32 like `order` (or None: all 1): each example's weight in its batch's loss.
    """

    order: Any
    steps: np.ndarray
    weights: Any = None

    @property
    def max_steps(self) -> int:
        return int(np.max(self.steps))

    @property
    def shared(self) -> bool:
        return np.ndim(self.order) == 1


class Hook(Protocol):
    """Runs after each epoch of `fit` (and, if it has one, its `before_epoch(fit, epoch)` before each);
    may change the state and `Fit.running`."""

    def after_epoch(self, fit: 'Fit', epoch: int, state: Any, losses: np.ndarray) -> Any:
        ...


@dataclasses.dataclass(frozen=True)
class Chunk:
    """`num_steps` steps of a trainable in one call, for one model (lifted by `fit`).

    `own` and `common` are the trainable's data: per model, and shared by every model.
    """

    trainable: Any
    batch_size: int

    def __call__(self, state, order, weights, steps, first_step, epoch, active, own, common, *, num_steps: int):
        """-> (state, the summed loss of the steps run: a scalar, or the trainable's loss array)."""
        b = self.batch_size

        def one(state, i):
            step = first_step + i
            idx = jax.lax.dynamic_slice_in_dim(order, step * b, b)
            w = jnp.ones((b,), jnp.float32) if weights is None else jax.lax.dynamic_slice_in_dim(weights, step * b, b)
            new, loss = self.trainable.step(state, idx=idx, weights=w, epoch=epoch, step=step, **own, **common)
            on = active & (step < steps)
            return jax.tree_util.tree_map(lambda n, o: jnp.where(on, n, o), new, state), jnp.where(on, loss, 0.0)

        if num_steps == 1:
            return one(state, 0)
        state, losses = jax.lax.scan(one, state, jnp.arange(num_steps))
        return state, losses.sum(axis=0)


@dataclasses.dataclass
class Fit:
    """A fit in progress, as its hooks see it.

    Attributes:
      running: bool [R]: models still training (a hook may stop one: converged, diverged).
      lifting: how the models are lifted.
    """

    running: np.ndarray
    lifting: Lifting


def _before(hooks, run, epoch) -> None:
    for hook in hooks:
        if hasattr(hook, 'before_epoch'):
            hook.before_epoch(run, epoch)


def fit(trainable, state, *, epochs: Iterable[int], batches: Callable[[int], Batches], own: dict, common: dict,
        lifting: Lifting | str, batch_size: int, chunk_steps: int = 1, hooks: Sequence[Hook] = (),
        running: np.ndarray | None = None, progress: Callable | None = None) -> Any:
    """Trains R models (state: any lifting layout, leading axis R) over `epochs`.

    Args:
      trainable: see the module doc.
      state: the models' training state.
      epochs: the epochs to run (e.g. range(start + 1, last + 1)); each calls `batches(epoch)`.
      own: the trainable's data per model (leading axis R); common: its data shared by all models.
      chunk_steps: steps per compiled call.
      hooks: called after every epoch, in order (`Hook.after_epoch`).
      running: bool [R] (default all): the models to train, shared with the hooks (they may clear an
        entry); fit ends early when none is left.
      progress: optional `progress(total_steps, description)` context manager with `update(n)`.
    Returns:
      The state, in the lifting's layout (`memjax.engine.lifting.stacked` gives arrays [R, ...]).
    """
    lifting = Lifting(lifting) if isinstance(lifting, str) else lifting
    state = lifting.place(state)
    size = count(state)
    run = Fit(np.ones(size, bool) if running is None else running, lifting)
    own = lifting.place(own) if own else {}  # one tree per model (a Replicas tuple of dicts under loop)
    for epoch in epochs:
        if not run.running.any():
            break
        _before(hooks, run, epoch)
        plan = batches(epoch)
        per_model = ('state', 'steps', 'active') + (('own',) if own else ()) + (() if plan.shared else ('order',)) \
            + (('weights',) if plan.weights is not None and np.ndim(plan.weights) == 2 else ())
        program = lift(Chunk(trainable, batch_size), per_model, lifting, static=('num_steps',), carry='state')
        losses = 0.0
        total = plan.max_steps
        epoch_args = dict(order=plan.order if plan.shared else lifting.place(plan.order),
                          weights=plan.weights if 'weights' not in per_model else lifting.place(plan.weights),
                          steps=lifting.place(jnp.asarray(plan.steps, jnp.int32)),
                          active=lifting.place(jnp.asarray(run.running)), epoch=jnp.asarray(epoch, jnp.int32))
        bar = progress(total, f'epoch {epoch}') if progress else None
        for first in range(0, total, chunk_steps):
            n = min(chunk_steps, total - first)
            state, loss = program(running=run.running, state=state, first_step=jnp.asarray(first, jnp.int32),
                                  own=own, common=common, num_steps=n, **epoch_args)
            losses = losses + host(stacked(loss))
            if bar is not None:
                bar.update(n)
        if bar is not None:
            bar.close()
        losses = np.asarray(losses) / np.maximum(np.asarray(plan.steps), 1).reshape((-1,) + (1,) * (np.ndim(losses) - 1))
        for hook in hooks:
            state = hook.after_epoch(run, epoch, state, losses)
    return state
