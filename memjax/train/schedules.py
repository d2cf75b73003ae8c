"""Learning-rate schedules, as functions of the optimizer step."""

from __future__ import annotations

import jax.numpy as jnp
import optax


def one_cycle(peak_value: float, peak_step: float, total_steps: float) -> optax.Schedule:
    """Linear 0 -> peak_value at peak_step -> 0 at total_steps (P3's one-cycle)."""
    return lambda step: peak_value * jnp.interp(step, jnp.array([0.0, peak_step, total_steps]),
                                                jnp.array([0.0, 1.0, 0.0]))


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
        return one_cycle(lr, peak, total)
    if train.schedule == 'step':
        boundaries = {int(m * steps_per_epoch): float(train.gamma) for m in train.milestones}
        return optax.piecewise_constant_schedule(lr, boundaries)
    raise ValueError(f'unknown schedule {train.schedule!r}')
