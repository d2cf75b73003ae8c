"""Training a run: R replicas, one epoch loop, metrics and checkpoints every epoch.

`train(config, workdir)` creates or resumes the run directory, trains every
replica until its training accuracy (against its own noisy labels) reaches
`train.stop_accuracy` or `train.epochs` is reached, and writes metrics and
checkpoints. A replica that has converged is frozen (its later checkpoints
equal its converged state), exactly as if it had been trained alone and
stopped; the run ends when every replica has.

The steps, in order: `prepare_run` (data, replicas, labels, model, the run's
metadata), `create_trainer` (optimizer, initial states, compiled functions,
strategies), `choose_strategy`, then per epoch `train_epoch`, `evaluate` and
`save_epoch`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from memjax.checkpoint import Checkpoints, keep_epoch
from memjax.config import to_dict, validate
from memjax.data.dataset import Dataset, load_dataset
from memjax.data.facts import DataFacts, data_facts
from memjax.data.noise import NoisyLabels, noisy_labels
from memjax.data.pipeline import epoch_order
from memjax.data.replicas import Replica, make_replicas
from memjax.errors import ConfigError, RunDirectoryError
from memjax.models import StagedModel, model_from_config
from memjax.rundir import RunDirectory, read_json, write_json
from memjax.train import strategies as strategies_lib
from memjax.train.gradient_split import rows_from_sums, tensor_sums
from memjax.train.metrics import epoch_metrics
from memjax.train.progress import epoch_line, progress_bar
from memjax.train.replica_keys import data_keys, init_keys
from memjax.train.input_gradients import InputGradientMeter
from memjax.train.input_gradients import definition as input_gradient_definition
from memjax.train.state import init_state, make_optimizer, replica_weight_decays
from memjax.train.step import default_steps_per_call, make_predict, make_train_chunk

# Test hooks: SIGKILL this process right after the state of this epoch is on disk;
# make replica i's parameters NaN after epoch t ('i:t').
KILL_AFTER_EPOCH_ENV = 'MEMJAX_KILL_AFTER_EPOCH'
POISON_ENV = 'MEMJAX_POISON_REPLICA_AT_EPOCH'


@dataclasses.dataclass
class Setup:
    """What a run trains on: its data, replicas, their labels and the model."""

    config: Any
    run: RunDirectory
    dataset: Dataset
    replicas: list[Replica]
    noise: NoisyLabels
    model: StagedModel

    @property
    def steps_per_epoch(self) -> int:
        return self.dataset.num_train // int(self.config.train.batch_size)


@dataclasses.dataclass
class Trainer:
    """The compiled pieces of one run's training.

    Attributes:
      state: initial TrainState, stacked [R, ...].
      candidates: {strategy name: strategy} that can run the chunk.
      pool: uint8 [P, H, W, C] train + validation + test images (padded) on the device.
      eval_batches: the pool in evaluation batches [b, H, W, C].
      keys: data-order keys [R, 2], or one [2] when all replicas share their data order.
      chunk_steps: steps per compiled call.
    """

    state: Any
    candidates: dict
    pool: jax.Array
    eval_batches: list
    labels: jax.Array
    noise_mask: jax.Array
    keys: jax.Array
    shared_data: bool
    chunk_steps: int
    accounting: bool
    input_gradients: InputGradientMeter | None = None

    def orders(self, epoch: int, n: int) -> jax.Array:
        if self.shared_data:
            return epoch_order(self.keys, epoch, n)
        return jax.vmap(epoch_order, in_axes=(0, None, None))(self.keys, epoch, n)


def _image_pool(dataset: Dataset, eval_batch_size: int) -> tuple[jax.Array, list]:
    """The device pool uint8 [P, H, W, C] (train, validation, test, zero-padded to a
    multiple of the eval batch) and its evaluation batches [b, H, W, C]."""
    pool = np.concatenate([dataset.train_images, dataset.val_images, dataset.test_images])
    pad = -pool.shape[0] % eval_batch_size
    if pad:
        pool = np.concatenate([pool, np.zeros((pad, *pool.shape[1:]), pool.dtype)])
    pool = jax.device_put(pool)
    return pool, [pool[i:i + eval_batch_size] for i in range(0, pool.shape[0], eval_batch_size)]


def prepare_run(config, run: RunDirectory, stack: contextlib.ExitStack | None = None,
                check_data: Callable[[DataFacts], None] | None = None) -> Setup:
    """Loads data, draws the noisy labels, builds the model and writes (or checks) the run's metadata.

    Everything that can fail on bad input happens before the directory is
    created (`check_data(facts)`: the checks of the listed analyses that need
    the data); then the directory's lock is taken (held until `stack` closes).
    """
    dataset = load_dataset(config.data)
    replicas = make_replicas(config)
    noise = noisy_labels(dataset.train_labels, dataset.num_classes, [r.noise_ratio for r in replicas],
                         [r.seed for r in replicas], config.noise.seed, config.noise.mode,
                         bool(config.noise.get('shared_across_seeds', False)))
    if check_data is not None:
        check_data(data_facts(dataset, [r.noise_ratio for r in replicas], [r.seed for r in replicas], noise.labels,
                              noise.mask))
    batch_size, n = int(config.train.batch_size), dataset.num_train
    if batch_size > n:
        raise ConfigError(f"train.batch_size={batch_size} is larger than the {n} training examples; "
                          "lower --config.train.batch_size or raise --config.data.num_train")
    model = model_from_config(config.model, dataset.num_classes)
    arrays = dict(true_labels=dataset.train_labels, labels=noise.labels, noise_mask=noise.mask,
                  train_index=dataset.train_index, val_index=dataset.val_index, test_index=dataset.test_index)
    if stack is not None:
        stack.enter_context(run.locked())
    run.create(to_dict(config))
    if run.has_metadata():
        stored = run.load_noise()
        if any(not np.array_equal(stored[k], v) for k, v in arrays.items()):
            raise RunDirectoryError(f"the data or labels of {run.path} differ from the ones it was trained "
                                    "on (data files changed?); pass a new --workdir")
    else:  # new, or cut off while writing the set: (re)write it whole; it follows from config and data
        run.save_metadata(arrays, dataset.summary(), [r.to_dict() for r in replicas])
    return Setup(config, run, dataset, replicas, noise, model)


def create_trainer(setup: Setup) -> Trainer:
    """Optimizer, initial states, the compiled chunk and predict, and the candidate strategies."""
    config, dataset, replicas, model = setup.config, setup.dataset, setup.replicas, setup.model
    train_cfg = config.train
    tx = make_optimizer(train_cfg, setup.steps_per_epoch, weight_decay=False)
    accounting = bool(train_cfg.gradient_accounting)
    init = jax.jit(jax.vmap(lambda key, wd: init_state(model, tx, key, dataset.image_shape, accounting, wd)))
    decays = replica_weight_decays(train_cfg, [r.noise_ratio for r in replicas])
    state = init(jnp.asarray(init_keys(train_cfg, replicas)), jnp.asarray(decays))
    pool, eval_batches = _image_pool(dataset, int(train_cfg.eval_batch_size))
    keys = data_keys(train_cfg, replicas)
    shared_data = bool(np.all(keys == keys[0]))
    keys = jnp.asarray(keys[0] if shared_data else keys)
    chunk_fn = make_train_chunk(model, tx, batch_size=int(train_cfg.batch_size), augment=bool(config.data.augment),
                                mean=dataset.mean, std=dataset.std, gradient_accounting=accounting)
    predict_fn = make_predict(model, mean=dataset.mean, std=dataset.std)
    candidates = {'vmap': strategies_lib.VmapStrategy(chunk_fn, predict_fn, shared_data),
                  'loop': strategies_lib.LoopStrategy(chunk_fn, predict_fn, shared_data)}
    if len(jax.local_devices()) > 1 or train_cfg.strategy == 'shard':
        candidates['shard'] = strategies_lib.ShardStrategy(chunk_fn, predict_fn, shared_data, len(replicas))
    chunk_steps = min(int(train_cfg.steps_per_call) or default_steps_per_call(), setup.steps_per_epoch)
    meter = None
    if train_cfg.input_gradients:
        n = min(int(train_cfg.input_gradient_examples) or dataset.num_train, dataset.num_train)
        name = train_cfg.get('input_gradient_definition', 'eval_pixels')
        batch = int(train_cfg.batch_size) if input_gradient_definition(name).train else 256
        meter = InputGradientMeter(model, dataset.mean, dataset.std, dataset.train_images[:n],
                                   setup.noise.labels[:, :n], name, batch)
    return Trainer(state, candidates, pool, eval_batches, jax.device_put(setup.noise.labels),
                   jax.device_put(setup.noise.mask), keys, shared_data, chunk_steps, accounting, meter)


def choose_strategy(setup: Setup, trainer: Trainer, log: Callable):
    """The configured strategy or, for 'auto', `strategies.default_strategy`; a run that recorded
    its auto choice (strategy.json) keeps it when resumed, so a resumed run trains as it began."""
    name = setup.config.train.strategy
    record_path = setup.run.file('strategy.json')
    if name == 'auto':
        stored = read_json(record_path) if os.path.exists(record_path) else {}
        if stored.get('requested') == 'auto' and stored.get('strategy') in trainer.candidates:
            record = stored
        else:
            chosen, reason = strategies_lib.default_strategy(jax.default_backend(), len(jax.local_devices()),
                                                             len(setup.replicas))
            record = {'strategy': chosen, 'reason': reason, 'backend': jax.default_backend(),
                      'device': jax.devices()[0].device_kind, 'devices': len(jax.local_devices())}
        log(f"strategy auto -> {record['strategy']} ({record.get('reason', 'recorded')})")
    else:
        record = {'strategy': name}
    record['requested'] = setup.config.train.strategy
    write_json(record_path, record)
    return trainer.candidates[record['strategy']]


def train_epoch(setup: Setup, trainer: Trainer, strategy, state, epoch: int, progress: dict):
    """One epoch of every active replica; returns (state, mean training loss [R])."""
    steps_per_epoch = setup.steps_per_epoch
    orders = trainer.orders(epoch, setup.dataset.num_train)
    losses = jnp.zeros(len(setup.replicas), jnp.float32)
    with progress_bar(steps_per_epoch, f'epoch {epoch}/{setup.config.train.epochs}') as bar:
        for first in range(0, steps_per_epoch, trainer.chunk_steps):
            steps = min(trainer.chunk_steps, steps_per_epoch - first)
            state, chunk_loss = strategy.train_chunk(state, trainer.pool, trainer.labels, trainer.noise_mask, orders,
                                                     epoch, first, trainer.keys, progress['active'], steps)
            losses = losses + chunk_loss
            bar.update(steps)
    return state, strategies_lib.as_numpy(losses) / steps_per_epoch


def evaluate(setup: Setup, trainer: Trainer, strategy, state, epoch: int, losses, progress: dict) -> list[dict]:
    """One metrics row per replica: accuracies on every split and subset, loss, whether it is active."""
    predictions = strategies_lib.as_numpy(strategy.predict(state, trainer.eval_batches))
    data = setup.dataset
    rows = epoch_metrics(predictions, setup.noise.labels, data.train_labels, setup.noise.mask, data.val_labels,
                         data.test_labels)
    for i, row in enumerate(rows):
        rep = setup.replicas[i]
        row.update(epoch=epoch, replica=i, noise_ratio=rep.noise_ratio, seed=rep.seed,
                   train_loss=None if losses is None else float(losses[i]), active=bool(progress['active'][i]))
    if trainer.input_gradients is not None:
        values = trainer.input_gradients(strategy.gather(state).variables)
        for row, value in zip(rows, values):
            row['input_gradient'] = float(value)
    return rows


def update_progress(rows: list[dict], progress: dict, epoch: int, stop_accuracy) -> None:
    """Marks replicas that reached `stop_accuracy` as converged (they stop training)."""
    for i, row in enumerate(rows):
        if not progress['active'][i]:
            row['train_loss'] = None
        elif stop_accuracy is not None and row['train_accuracy'] >= stop_accuracy:
            progress['active'][i] = False
            progress['converged_epoch'][i] = epoch


def finite_replicas(stacked, losses) -> np.ndarray:
    """bool [R]: the replica's epoch loss and every parameter are finite."""
    params_ok = jax.tree_util.tree_reduce(
        jnp.logical_and, jax.tree_util.tree_map(lambda x: jnp.all(jnp.isfinite(x), axis=tuple(range(1, x.ndim))),
                                                stacked.variables['params']))
    return np.asarray(params_ok) & np.isfinite(np.asarray(losses))


def mark_diverged(setup: Setup, rows: list[dict], progress: dict, ok: np.ndarray, epoch: int, log) -> None:
    """Stops the replicas that are no longer finite and records the epoch (the others go on)."""
    for i in np.flatnonzero(~ok & (progress['diverged_epoch'] < 0)):
        progress['active'][i] = False
        progress['diverged_epoch'][i] = epoch
        log(f'replica {setup.replicas[i].name} diverged at epoch {epoch} (non-finite loss or parameters); '
            'it stops, the others go on')
    for i, row in enumerate(rows):
        row['diverged'] = bool(progress['diverged_epoch'][i] >= 0)


def _poison(stacked, epoch: int):
    """Test hook (POISON_ENV): NaN parameters for one replica after one epoch."""
    spec = os.environ.get(POISON_ENV, '')
    if not spec or int(spec.split(':')[1]) != epoch:
        return stacked
    i = int(spec.split(':')[0])
    return stacked.replace(params=jax.tree_util.tree_map(lambda x: x.at[i].set(jnp.nan), stacked.params))


def _record_gradients(run: RunDirectory, model, stacked, epoch: int, replicas, trained):
    """Appends this epoch's gradient accounting per parameter tensor (replicas that trained in it) to
    gradients.jsonl; zeroes the sums."""
    sums = jax.vmap(lambda c, n: tensor_sums(model, c, n))(stacked.grad_sums['clean'], stacked.grad_sums['noisy'])
    run.append_metrics(rows_from_sums(sums, epoch, replicas, trained), 'gradients.jsonl')
    return stacked.replace(grad_sums=jax.tree_util.tree_map(jnp.zeros_like, stacked.grad_sums))


def save_epoch(setup: Setup, checkpoints: Checkpoints, stacked, epoch: int, rows: list[dict], progress: dict,
               final: bool) -> None:
    """Kept params (on the schedule, and the final epoch), the resumable state, metrics and status."""
    keep = dict(every=int(setup.config.checkpoint.every), epochs=tuple(setup.config.checkpoint.epochs))
    if keep_epoch(epoch, **keep) or final:
        checkpoints.save_epoch(epoch, stacked.variables)
    # The rows go first: a state on disk promises its epoch's rows (resume truncates to the state's epoch).
    setup.run.append_metrics(rows)
    checkpoints.save_state(epoch, stacked, progress)
    setup.run.set_status(status='training', epoch=epoch)


def train(config, workdir: str, log: Callable[[str], None] = print,
          check_data: Callable[[DataFacts], None] | None = None) -> RunDirectory:
    """Trains (or resumes, or finds finished) the run of `config` in `workdir`, holding its lock.

    check_data(facts), if given, runs right after the data loads, before anything is written
    (the listed analyses' checks that need the data)."""
    validate(config)
    run = RunDirectory(workdir)
    run.check_compatible(to_dict(config))
    with contextlib.ExitStack() as stack:
        if os.path.isdir(run.path):  # an existing run: lock at once (a new one is locked once data loads)
            stack.enter_context(run.locked())
        return _train(config, run, log, stack, check_data)


def _train(config, run: RunDirectory, log: Callable[[str], None], stack: contextlib.ExitStack,
           check_data) -> RunDirectory:
    if run.status()['status'] == 'complete':
        if not run.has_metadata():
            prepare_run(config, run, stack)
            log(f'repaired the metadata of {run.path}')
        log(f'run in {run.path} is complete (epoch {run.status()["epoch"]}); nothing to train')
        return run
    setup = prepare_run(config, run, stack, check_data)
    trainer = create_trainer(setup)
    num_replicas, epochs = len(setup.replicas), int(config.train.epochs)
    progress = {'active': np.ones(num_replicas, bool), 'converged_epoch': np.full(num_replicas, -1, np.int32),
                'diverged_epoch': np.full(num_replicas, -1, np.int32)}
    checkpoints = Checkpoints(run.checkpoint_dir, async_save=bool(config.checkpoint.async_save))
    stack.push(lambda kind, error, trace: kind is not None and checkpoints.close(quiet=True))  # finish orbax's threads
    legacy = {k: v for k, v in progress.items() if k != 'diverged_epoch'}  # states of memjax <= 0.1
    restored = checkpoints.restore_state(trainer.state, progress, log, legacy)
    if restored is None and run.last_metrics_epoch() > 0:
        raise RunDirectoryError(f"{run.path} has metrics up to epoch {run.last_metrics_epoch()} but no resumable "
                                "state (checkpoints/state was removed?); it will not be retrained over silently: "
                                "pass a new --workdir")
    strategy = choose_strategy(setup, trainer, log)
    data = setup.dataset
    log(f'{num_replicas} replicas ({", ".join(r.name for r in setup.replicas)}) of {setup.model.name} on '
        f'{data.name} ({data.num_train} train / {data.val_labels.size} val / {data.test_labels.size} test), '
        f'{setup.steps_per_epoch} steps per epoch, strategy {strategy.name}, backend {jax.default_backend()}')
    keep = dict(every=int(config.checkpoint.every), epochs=tuple(config.checkpoint.epochs))
    if restored is not None:
        start_epoch, state, restored_progress = restored
        progress = {**progress, **{k: np.array(v) for k, v in restored_progress.items()}}
        run.truncate_metrics(start_epoch)
        run.truncate_metrics(start_epoch, 'gradients.jsonl')
        finished = not progress['active'].any() or start_epoch == epochs
        if keep_epoch(start_epoch, **keep) or finished:  # its async save may have been cut off
            checkpoints.save_epoch(start_epoch, state.variables)
        log(f'resuming {run.path} after epoch {start_epoch}')
    else:  # drop epoch-0 rows written before a kill cut off the first state save
        run.truncate_metrics(-1)
        run.truncate_metrics(-1, 'gradients.jsonl')
        start_epoch, state = 0, trainer.state
        rows = evaluate(setup, trainer, strategy, strategy.place(state), 0, None, progress)
        save_epoch(setup, checkpoints, state, 0, rows, progress, final=False)
        log(epoch_line(0, epochs, rows, 0.0))

    state = strategy.place(state)
    final_epoch = start_epoch
    for epoch in range(start_epoch + 1, epochs + 1):
        if not progress['active'].any():
            break
        started = time.perf_counter()
        state, losses = train_epoch(setup, trainer, strategy, state, epoch, progress)
        rows = evaluate(setup, trainer, strategy, state, epoch, losses, progress)
        stacked = _poison(strategy.gather(state), epoch)
        ok = finite_replicas(stacked, losses)
        update_progress(rows, progress, epoch, config.train.stop_accuracy)
        mark_diverged(setup, rows, progress, ok, epoch, log)
        state = strategy.place(stacked)
        if trainer.accounting:
            stacked = _record_gradients(run, setup.model, stacked, epoch, setup.replicas,
                                        [row['active'] for row in rows])
            state = strategy.place(stacked)
        save_epoch(setup, checkpoints, stacked, epoch, rows, progress,
                   final=not progress['active'].any() or epoch == epochs)
        log(epoch_line(epoch, epochs, rows, time.perf_counter() - started))
        final_epoch = epoch
        if os.environ.get(KILL_AFTER_EPOCH_ENV) == str(epoch):
            checkpoints.wait()
            os.kill(os.getpid(), signal.SIGKILL)
    else:
        final_epoch = epochs
    checkpoints.close()
    diverged = [setup.replicas[i].name for i in np.flatnonzero(progress['diverged_epoch'] >= 0)]
    run.set_status(status='complete', epoch=final_epoch,
                   converged_epoch=[int(e) for e in progress['converged_epoch']],
                   diverged_epoch=[int(e) for e in progress['diverged_epoch']], diverged=diverged)
    return run
