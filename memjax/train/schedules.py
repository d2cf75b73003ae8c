"""Learning-rate schedules, as functions of the optimizer step."""

from __future__ import annotations

import jax.numpy as jnp
import optax


def make_schedule(train, steps_per_epoch: int) -> optax.Schedule:
    """The schedule named by `train.schedule`.

    - constant: `learning_rate` throughout.
    - cosine: cosine decay from `learning_rate` to 0 over `epochs`.
    - onecycle: linear 0 -> `learning_rate` at `peak_epoch` -> 0 at `epochs`
      (P3's schedule: peak 0.1 at epoch 10 of 50).
    - step: multiplied by `gamma` at each epoch in `milestones`.
    """
    lr = float(train.learning_rate)
    total = max(1, int(train.epochs) * steps_per_epoch)
    if train.schedule == 'constant':
        return optax.constant_schedule(lr)
    if train.schedule == 'cosine':
        return optax.cosine_decay_schedule(lr, total)
    if train.schedule == 'onecycle':
        peak = float(train.peak_epoch) * steps_per_epoch
        return lambda step: lr * jnp.interp(step, jnp.array([0.0, peak, total]), jnp.array([0.0, 1.0, 0.0]))
    if train.schedule == 'step':
        boundaries = {int(m * steps_per_epoch): float(train.gamma) for m in train.milestones}
        return optax.piecewise_constant_schedule(lr, boundaries)
    raise ValueError(f'unknown schedule {train.schedule!r}')
