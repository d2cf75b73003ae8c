"""The compiled work for ONE replica: a chunk of training steps and prediction.

Both functions are pure and written for a single replica; a strategy in
`memjax.train.strategies` lifts them over the replica axis (vmap or loop).
Images are the run's whole uint8 pool on the device; batches are gathered by
index inside the step, augmented (optionally) and normalised there.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from memjax.data.pipeline import augment_key, dropout_key, normalize, random_crop_flip
from memjax.models.stages import StagedModel
from memjax.train.gradient_split import split_gradients
from memjax.train.state import TrainState


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy of logits [B, K] against int labels [B]."""
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels).mean()


def default_steps_per_call() -> int:
    """Steps compiled into one call when train.steps_per_call = 0 (auto).

    XLA:CPU runs convolutions inside a loop body (lax.scan / while) about 10x
    slower than the same convolutions outside one (measured here: 47 ms vs
    550 ms per step of the small CNN; jax issue 12868), so on CPU every step
    is its own call. Accelerators get 50 steps per call, one dispatch each.
    """
    return 1 if jax.default_backend() == 'cpu' else 50


def make_train_chunk(model: StagedModel, tx: optax.GradientTransformation, *, batch_size: int,
                     augment: bool, mean: np.ndarray, std: np.ndarray,
                     gradient_accounting: bool = False, masks_fn: Callable | None = None) -> Callable:
    """Builds `train_chunk` for one replica.

    masks_fn (optional, a hook for analyses that train with masked channels,
    e.g. example-tied dropout): masks_fn(idx, epoch, batch) -> {stage: mask
    [B, ...]} for the batch's example indices idx [B]; the masks go to
    `StagedModel.apply(masks=...)` in the loss. Not combined with gradient
    accounting.

    train_chunk(state, images, labels, noise_mask, order, epoch, first_step, data_key, active, *, num_steps)
      state: TrainState of one replica.
      images: uint8 [P, H, W, C], the run's image pool (training examples first).
      labels: int32 [N] this replica's (noisy) training labels.
      noise_mask: bool [N] its relabelled examples (used by gradient accounting:
        the step's gradient is computed as its clean and noisy parts, whose
        sum is the ordinary gradient, and both are added to state.grad_sums).
      order: int32 [N] this epoch's permutation of the training examples.
      epoch, first_step: int32 scalars; the chunk runs batches
        first_step .. first_step + num_steps - 1 of the epoch.
      data_key: PRNG key [2] of the replica's data stream (augmentation, and the
        model's dropout: `dropout_key(data_key, epoch, batch)` goes to
        `StagedModel.apply(rng=...)`; models without dropout ignore it).
      active: bool scalar; False returns the state unchanged (a converged
        replica under vmap; the loop strategy does not call it at all).
      num_steps: static number of steps (1: no loop in the program at all).
    Returns (state, summed training loss over the chunk: float32 scalar).
    """
    if masks_fn is not None and gradient_accounting:
        raise ValueError('make_train_chunk: masks_fn and gradient_accounting are not combined')
    mean = jnp.asarray(mean, jnp.float32)
    std = jnp.asarray(std, jnp.float32)

    def train_chunk(state, images, labels, noise_mask, order, epoch, first_step, data_key, active, *,
                    num_steps):
        def one_step(state, i):
            batch = first_step + i
            idx = jax.lax.dynamic_slice_in_dim(order, batch * batch_size, batch_size)
            x, y = images[idx], labels[idx]
            if augment:
                x = random_crop_flip(x, augment_key(data_key, epoch, batch))
            x = normalize(x, mean, std, model.dtype)
            sums = state.grad_sums
            rng = dropout_key(data_key, epoch, batch)
            if gradient_accounting:
                g_clean, g_noisy, batch_stats, losses = split_gradients(
                    model, state.variables, x, y, noise_mask[idx], 1.0 / batch_size, rng=rng)
                grads = jax.tree_util.tree_map(jnp.add, g_clean, g_noisy)
                loss = losses.mean()
                sums = {'clean': jax.tree_util.tree_map(jnp.add, sums['clean'], g_clean),
                        'noisy': jax.tree_util.tree_map(jnp.add, sums['noisy'], g_noisy)}
            else:
                masks = None if masks_fn is None else masks_fn(idx, epoch, batch)

                def loss_fn(params):
                    run = model.apply({'params': params, 'batch_stats': state.batch_stats}, x, train=True,
                                      masks=masks, rng=rng)
                    return cross_entropy(run.output, y), run.batch_stats

                (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
            if state.weight_decay is not None:  # this replica's (coupled) weight decay, as optax's add_decayed_weights
                grads = jax.tree_util.tree_map(lambda g, p: g + state.weight_decay * p, grads, state.params)
            updates, opt_state = tx.update(grads, state.opt_state, state.params)
            return state.replace(params=optax.apply_updates(state.params, updates), batch_stats=batch_stats,
                                 opt_state=opt_state, grad_sums=sums), loss

        if num_steps == 1:
            new_state, loss = one_step(state, 0)
        else:
            new_state, losses = jax.lax.scan(one_step, state, jnp.arange(num_steps))
            loss = losses.sum()
        keep = lambda new, old: jnp.where(active, new, old)
        return jax.tree_util.tree_map(keep, new_state, state), jnp.where(active, loss, 0.0)

    return train_chunk


def make_predict(model: StagedModel, *, mean: np.ndarray, std: np.ndarray) -> Callable:
    """Builds `predict(variables, images) -> int32 [B]` for one batch (evaluation mode).

    Callers loop over batches of a fixed size in Python (no lax.scan, which is
    slow for convolutions on XLA:CPU); dispatch is asynchronous, so on an
    accelerator the batches still run back to back.
    """
    mean = jnp.asarray(mean, jnp.float32)
    std = jnp.asarray(std, jnp.float32)

    def predict(variables, images):
        logits = model.apply(variables, normalize(images, mean, std, model.dtype), train=False).output
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)

    return predict
