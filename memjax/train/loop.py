"""Training a run: R replicas, one epoch loop, metrics and checkpoints every epoch.

`train(config, workdir)` creates or resumes the run directory, trains every
replica until its training accuracy (against its own noisy labels) reaches
`train.stop_accuracy` or `train.epochs` is reached, and writes metrics,
checkpoints and the summary table. A replica that has converged is frozen
(its later checkpoints equal its converged state), exactly as if it had been
trained alone and stopped; the run ends when every replica has.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from memjax.checkpoint import Checkpoints, keep_epoch
from memjax.config import to_dict, validate
from memjax.data.noise import noisy_labels
from memjax.data.pipeline import epoch_order
from memjax.errors import ConfigError, RunDirectoryError
from memjax.report.summary import epoch_line, write_summary
from memjax.run import build_run_model, load_run_data
from memjax.rundir import RunDirectory, read_json, write_json
from memjax.train import strategies as strategies_lib
from memjax.train.gradient_split import rows_from_statistics, stage_statistics
from memjax.train.metrics import epoch_metrics
from memjax.train.replicas import data_keys, init_keys, make_replicas
from memjax.train.state import init_state, make_optimizer
from memjax.train.step import default_steps_per_call, make_predict, make_train_chunk

# Test hook: SIGKILL this process right after the state of this epoch is on disk.
KILL_AFTER_EPOCH_ENV = 'MEMJAX_KILL_AFTER_EPOCH'


def _progress_bar(total: int, description: str):
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=description, leave=False, unit='step', dynamic_ncols=True,
                disable=None, file=sys.stderr)


def _image_pool(dataset, eval_batch_size: int) -> tuple[jax.Array, list]:
    """The device pool uint8 [P, H, W, C] (train, validation, test, zero-padded to a
    multiple of the eval batch) and its evaluation batches [b, H, W, C]."""
    pool = np.concatenate([dataset.train_images, dataset.val_images, dataset.test_images])
    pad = -pool.shape[0] % eval_batch_size
    if pad:
        pool = np.concatenate([pool, np.zeros((pad, *pool.shape[1:]), pool.dtype)])
    pool = jax.device_put(pool)
    return pool, [pool[i:i + eval_batch_size] for i in range(0, pool.shape[0], eval_batch_size)]


def _choose_strategy(config, run: RunDirectory, candidates: dict, stacked, chunk_args, log: Callable):
    """The configured strategy, or for 'auto' the measured faster one (remembered in the run)."""
    name = config.train.strategy
    record_path = run.file('strategy.json')
    if name == 'auto':
        if len(chunk_args[1]) == 1:  # labels [R, N]: a single replica
            name, record = 'loop', {'strategy': 'loop', 'reason': 'a single replica'}
        elif os.path.exists(record_path) and read_json(record_path).get('requested') == 'auto':
            record = read_json(record_path)
            name = record['strategy']
        else:
            steps = min(3, chunk_args[-1])
            timings = strategies_lib.measure_strategies(candidates, stacked, chunk_args[:-1], steps)
            name = strategies_lib.fastest(timings)
            record = {'strategy': name, 'seconds_per_chunk': timings, 'chunk_steps': steps,
                      'backend': jax.default_backend(), 'device': jax.devices()[0].device_kind}
            log('auto strategy: ' + ', '.join(f'{k} {v:.3f}s' for k, v in timings.items())
                + f' per {steps}-step chunk -> {name}')
    else:
        record = {'strategy': name}
    record['requested'] = config.train.strategy
    write_json(record_path, record)
    return candidates[name]


def _record_gradients(run: RunDirectory, stacked, epoch: int, replicas):
    """Appends this epoch's gradient accounting to gradients.jsonl and zeroes the sums."""
    statistics = jax.vmap(stage_statistics)(stacked.grad_sums['clean'], stacked.grad_sums['noisy'])
    run.append_metrics(rows_from_statistics(statistics, epoch, replicas), 'gradients.jsonl')
    return stacked.replace(grad_sums=jax.tree_util.tree_map(jnp.zeros_like, stacked.grad_sums))


def train(config, workdir: str, log: Callable[[str], None] = print) -> RunDirectory:
    """Trains (or resumes, or finds finished) the run of `config` in `workdir`."""
    validate(config)
    config_dict = to_dict(config)
    run = RunDirectory(workdir)
    run.check_compatible(config_dict)
    if run.status()['status'] == 'complete':
        log(f'run in {run.path} is complete (epoch {run.status()["epoch"]}); nothing to train')
        if os.path.exists(run.file('summary.txt')):
            with open(run.file('summary.txt')) as f:
                log(f.read())
        return run
    # Everything that can fail on bad input happens before the directory is written.
    dataset = load_run_data(config)
    replicas = make_replicas(config)
    ratios = [r.noise_ratio for r in replicas]
    noise = noisy_labels(dataset.train_labels, dataset.num_classes, ratios, [r.seed for r in replicas],
                         config.noise.seed, config.noise.mode)
    arrays = dict(true_labels=dataset.train_labels, labels=noise.labels, noise_mask=noise.mask,
                  train_index=dataset.train_index, val_index=dataset.val_index,
                  test_index=dataset.test_index)
    train_cfg = config.train
    batch_size, n = int(train_cfg.batch_size), dataset.num_train
    if batch_size > n:
        raise ConfigError(f"train.batch_size={batch_size} is larger than the {n} training examples; "
                          "lower --config.train.batch_size or raise --config.data.num_train")
    model = build_run_model(config, dataset.num_classes)
    run.create(config_dict)
    if os.path.exists(run.file('noise.npz')):
        stored = run.load_noise()
        if any(not np.array_equal(stored[k], v) for k, v in arrays.items()):
            raise RunDirectoryError(f"the data or labels of {run.path} differ from the ones it was trained "
                                    "on (data files changed?); pass a new --workdir")
    else:
        run.save_noise(**arrays)
        write_json(run.file('data.json'), dataset.summary())
        write_json(run.file('replicas.json'), [r.to_dict() for r in replicas])

    steps_per_epoch = n // batch_size
    tx = make_optimizer(train_cfg, steps_per_epoch)
    num_replicas = len(replicas)
    accounting = bool(train_cfg.gradient_accounting)
    init = jax.jit(jax.vmap(lambda key: init_state(model, tx, key, dataset.image_shape, accounting)))
    state = init(jnp.asarray(init_keys(train_cfg, replicas)))
    progress = {'active': np.ones(num_replicas, bool), 'converged_epoch': np.full(num_replicas, -1, np.int32)}

    pool, eval_batches = _image_pool(dataset, int(train_cfg.eval_batch_size))
    labels = jax.device_put(noise.labels)
    noise_mask = jax.device_put(noise.mask)
    keys = data_keys(train_cfg, replicas)
    shared_data = bool(np.all(keys == keys[0]))
    keys = jnp.asarray(keys[0] if shared_data else keys)
    chunk_fn = make_train_chunk(model, tx, batch_size=batch_size, augment=bool(config.data.augment),
                                mean=dataset.mean, std=dataset.std, gradient_accounting=accounting)
    predict_fn = make_predict(model, mean=dataset.mean, std=dataset.std)
    candidates = {'vmap': strategies_lib.VmapStrategy(chunk_fn, predict_fn, shared_data),
                  'loop': strategies_lib.LoopStrategy(chunk_fn, predict_fn, shared_data)}
    if len(jax.local_devices()) > 1 or train_cfg.strategy == 'shard':
        candidates['shard'] = strategies_lib.ShardStrategy(chunk_fn, predict_fn, shared_data, num_replicas)

    def orders_for(epoch: int):
        if shared_data:
            return epoch_order(keys, epoch, n)
        return jax.vmap(epoch_order, in_axes=(0, None, None))(keys, epoch, n)

    def evaluate(strategy, state, epoch: int, losses) -> list[dict]:
        predictions = strategies_lib.as_numpy(strategy.predict(state, eval_batches))
        rows = epoch_metrics(predictions, noise.labels, dataset.train_labels, noise.mask,
                             dataset.val_labels, dataset.test_labels)
        for i, row in enumerate(rows):
            row.update(epoch=epoch, replica=i, noise_ratio=replicas[i].noise_ratio, seed=replicas[i].seed,
                       train_loss=None if losses is None else float(losses[i]),
                       active=bool(progress['active'][i]))
        return rows

    checkpoints = Checkpoints(run.checkpoint_dir, async_save=bool(config.checkpoint.async_save))
    keep = dict(every=int(config.checkpoint.every), epochs=tuple(config.checkpoint.epochs))
    restored = checkpoints.restore_state(state, progress)
    first_chunk = min(int(train_cfg.steps_per_call) or default_steps_per_call(), steps_per_epoch)
    chunk_args = (pool, labels, noise_mask, orders_for(1), 1, 0, keys, progress['active'], first_chunk)
    strategy = _choose_strategy(config, run, candidates, state, chunk_args, log)
    log(f'{num_replicas} replicas ({", ".join(r.name for r in replicas)}) of {model.name} on '
        f'{dataset.name} ({n} train / {dataset.val_labels.size} val / {dataset.test_labels.size} test), '
        f'{steps_per_epoch} steps per epoch, strategy {strategy.name}, backend {jax.default_backend()}')
    if restored is not None:
        start_epoch, state, progress = restored
        progress = {k: np.array(v) for k, v in progress.items()}
        run.truncate_metrics(start_epoch)
        run.truncate_metrics(start_epoch, 'gradients.jsonl')
        finished = not progress['active'].any() or start_epoch == int(train_cfg.epochs)
        if keep_epoch(start_epoch, **keep) or finished:  # its async save may have been cut off
            checkpoints.save_epoch(start_epoch, state.variables)
        log(f'resuming {run.path} after epoch {start_epoch}')
    else:
        start_epoch = 0
        rows = evaluate(strategy, strategy.place(state), 0, None)
        run.append_metrics(rows)
        checkpoints.save_epoch(0, state.variables)
        checkpoints.save_state(0, state, progress)
        log(epoch_line(0, int(train_cfg.epochs), rows, 0.0))

    state = strategy.place(state)
    final_epoch = start_epoch
    stop_accuracy = train_cfg.stop_accuracy
    for epoch in range(start_epoch + 1, int(train_cfg.epochs) + 1):
        if not progress['active'].any():
            break
        started = time.perf_counter()
        orders = orders_for(epoch)
        losses = jnp.zeros(num_replicas, jnp.float32)
        with _progress_bar(steps_per_epoch, f'epoch {epoch}/{train_cfg.epochs}') as bar:
            for first in range(0, steps_per_epoch, first_chunk):
                steps = min(first_chunk, steps_per_epoch - first)
                state, chunk_loss = strategy.train_chunk(state, pool, labels, noise_mask, orders, epoch, first,
                                                         keys, progress['active'], steps)
                losses = losses + chunk_loss
                bar.update(steps)
        rows = evaluate(strategy, state, epoch, strategies_lib.as_numpy(losses) / steps_per_epoch)
        for i, row in enumerate(rows):
            if not progress['active'][i]:
                row['train_loss'] = None
            elif stop_accuracy is not None and row['train_accuracy'] >= stop_accuracy:
                progress['active'][i] = False
                progress['converged_epoch'][i] = epoch
        final = not progress['active'].any() or epoch == int(train_cfg.epochs)
        stacked = strategy.gather(state)
        if accounting:
            stacked = _record_gradients(run, stacked, epoch, replicas)
            state = strategy.place(stacked)
        if keep_epoch(epoch, **keep) or final:
            checkpoints.save_epoch(epoch, stacked.variables)
        checkpoints.save_state(epoch, stacked, progress)
        run.append_metrics(rows)
        run.set_status(status='training', epoch=epoch)
        log(epoch_line(epoch, int(train_cfg.epochs), rows, time.perf_counter() - started))
        final_epoch = epoch
        if os.environ.get(KILL_AFTER_EPOCH_ENV) == str(epoch):
            checkpoints.wait()
            os.kill(os.getpid(), signal.SIGKILL)
    else:
        final_epoch = int(train_cfg.epochs)
    checkpoints.close()
    run.set_status(status='complete', epoch=final_epoch,
                   converged_epoch=[int(e) for e in progress['converged_epoch']])
    log(write_summary(run))
    return run
