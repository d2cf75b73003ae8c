"""Training a run: R replicas through the one fit loop, with metrics and checkpoints every epoch.

`train(config, workdir)` creates or resumes the run directory, trains every
replica until its training accuracy (against its own noisy labels) reaches
`train.stop_accuracy` or `train.epochs` is reached, and writes metrics and
checkpoints. A replica that has converged is frozen (its later checkpoints
equal its converged state), exactly as if it had been trained alone and
stopped; the run ends when every replica has.

The steps: `prepare_run` (data, replicas, labels, model, the run's metadata;
`memjax.train.setup`), the lifting (`train.strategy`, recorded in
strategy.json and kept when resumed), the initial state or the restored one,
then `memjax.engine.fit` with the trainable `ClassifierTrainable` and the
epoch hooks of `memjax.train.hooks`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from memjax.checkpoint import Checkpoints, keep_epoch
from memjax.config import run_settings, to_dict
from memjax.data.facts import DataFacts
from memjax.data.pipeline import epoch_order
from memjax.engine import processes
from memjax.engine.fit import Batches, fit
from memjax.engine.lifting import Lifting, choose, lift, stacked
from memjax.engine.runner import runner_for
from memjax.errors import RunDirectoryError
from memjax.rundir import RunDirectory, read_json, write_json
from memjax.train import hooks as hooks_lib
from memjax.train.faults import Kill
from memjax.train.input_gradients import InputGradientMeter
from memjax.train.progress import progress_bar
from memjax.train.replica_keys import data_keys, init_keys
from memjax.train.setup import Setup, prepare_run
from memjax.train.state import OptimizerSpec, replica_weight_decays
from memjax.train.trainable import ClassifierTrainable


def default_steps_per_call() -> int:
    """Steps compiled into one call when train.steps_per_call = 0 (auto).

    XLA:CPU runs convolutions inside a loop body (lax.scan / while) about 10x
    slower than the same convolutions outside one (measured here: 47 ms vs
    550 ms per step of the small CNN; jax issue 12868), so on CPU every step
    is its own call. Accelerators get 50 steps per call, one dispatch each.
    """
    return 1 if jax.default_backend() == 'cpu' else 50


@dataclasses.dataclass(frozen=True)
class _Init:
    """One replica's initial training state from its init key and weight decay (lifted over replicas)."""

    trainable: ClassifierTrainable
    image_shape: tuple

    def __call__(self, key, weight_decay):
        return self.trainable.init(self.trainable.model.init(key, self.image_shape), weight_decay)


def choose_lifting(setup: Setup, log: Callable) -> Lifting:
    """The configured lifting ('auto' resolved by `memjax.engine.lifting.choose`); a run that recorded an
    auto choice (strategy.json) keeps it when resumed, so a resumed run trains as it began."""
    requested = setup.settings.train.strategy
    record_path = setup.run.file('strategy.json')
    stored = read_json(record_path) if os.path.exists(record_path) else {}
    if requested == 'auto' and stored.get('requested') == 'auto' and stored.get('strategy'):
        lifting, reason = choose(stored['strategy'], len(setup.replicas))
        reason = f"recorded when the run began ({stored.get('reason', '')})"
    else:
        lifting, reason = choose(requested, len(setup.replicas))
    record = {'strategy': lifting.kind, 'requested': requested, 'reason': reason, 'backend': jax.default_backend(),
              'device': jax.devices()[0].device_kind, 'devices': jax.device_count()}
    if requested == 'auto':
        log(f'strategy auto -> {lifting.kind} ({reason})')
    write_json(record_path, record)
    return lifting


def _image_pool(dataset) -> jax.Array:
    """The device pool uint8 [P, H, W, C]: train, validation, test (training examples first)."""
    return jax.device_put(np.concatenate([dataset.train_images, dataset.val_images, dataset.test_images]))


def _run_batches(keys, shared: bool, num_train: int, steps: int, batch: int, size: int) -> Callable[[int], Batches]:
    """Each epoch's order: every replica's own permutation of the training set (or one shared)."""
    def batches(epoch: int) -> Batches:
        if shared:
            order = epoch_order(keys, epoch, num_train)[:steps * batch]
        else:
            order = jax.vmap(epoch_order, in_axes=(0, None, None))(keys, epoch, num_train)[:, :steps * batch]
        return Batches(order, np.full(size, steps))
    return batches


def train(config, workdir: str, log: Callable[[str], None] = print,
          check_data: Callable[[DataFacts], None] | None = None, faults: tuple = ()) -> RunDirectory:
    """Trains (or resumes, or finds finished) the run of `config` in `workdir`, holding its lock.

    check_data(facts), if given, runs right after the data loads, before anything is written
    (the listed analyses' checks that need the data). faults: hooks injected on purpose
    (`memjax.train.faults`, for tests of resume and divergence).
    """
    settings = run_settings(config)
    run = RunDirectory(workdir)
    with contextlib.ExitStack() as stack:
        with processes.together('opening the run directory'):
            run.check_compatible(to_dict(config))
            if os.path.isdir(run.path):  # an existing run: lock at once (a new one is locked once data loads)
                stack.enter_context(run.locked())
        if run.status()['status'] == 'complete':
            if not run.has_metadata():
                prepare_run(config, run, stack)
                log(f'repaired the metadata of {run.path}')
            log(f'run in {run.path} is complete (epoch {run.status()["epoch"]}); nothing to train')
            return run
        setup = prepare_run(config, run, stack, check_data)
        checkpoints = Checkpoints(run.checkpoint_dir, async_save=settings.checkpoint.async_save)
        stack.push(lambda kind, error, trace: kind is not None and checkpoints.close(quiet=True))  # orbax threads
        _train(setup, checkpoints, log, faults)
    return run


def _train(setup: Setup, checkpoints: Checkpoints, log: Callable, faults: tuple) -> None:
    settings, run, data = setup.settings, setup.run, setup.dataset
    train_settings = settings.train
    size, epochs = len(setup.replicas), train_settings.epochs
    lifting = choose_lifting(setup, log)
    runner = runner_for(setup.model, data.mean, data.std)
    trainable = ClassifierTrainable(runner, OptimizerSpec.from_train(train_settings, setup.steps_per_epoch,
                                                                     weight_decay=False),
                                    augment=settings.data.augment, record_gradients=train_settings.gradient_accounting)
    decays = jnp.asarray(replica_weight_decays(train_settings, setup.noise_ratios))
    initial = stacked(lift(_Init(trainable, data.image_shape), ('key', 'weight_decay'), lifting)(
        key=jnp.asarray(init_keys(train_settings, setup.replicas)), weight_decay=decays))
    progress = hooks_lib.Progress.start(size)
    epoch = hooks_lib.Epoch()
    pool = lifting.place_shared(_image_pool(data))
    evaluate = hooks_lib.Evaluate(setup, runner, lifting, pool, train_settings.eval_batch_size, progress, epoch)
    save = hooks_lib.Save(setup, checkpoints, progress, epoch, log)
    hooks = [evaluate]
    if train_settings.input_gradients:
        hooks.append(hooks_lib.InputGradientRecord(_input_gradient_meter(setup, runner, lifting), epoch))
    hooks += [f for f in faults if getattr(f, 'position', '') == 'before_health']
    hooks.append(hooks_lib.Health(setup, progress, epoch, train_settings.stop_accuracy, log))
    if train_settings.gradient_accounting:
        hooks.append(hooks_lib.GradientRecord(setup, lifting, epoch))
    hooks.append(save)
    hooks += [dataclasses.replace(f, checkpoints=checkpoints) if isinstance(f, Kill) else f
              for f in faults if getattr(f, 'position', '') == 'after_save']
    files = ['metrics.jsonl'] + [name for hook in hooks for name in getattr(hook, 'files', ()) if name != 'metrics.jsonl']

    restored = checkpoints.restore_state(initial, progress.to_checkpoint(), log,
                                         {k: v for k, v in progress.to_checkpoint().items() if k != 'diverged_epoch'})
    if restored is None and run.last_metrics_epoch() > 0:
        raise RunDirectoryError(f"{run.path} has metrics up to epoch {run.last_metrics_epoch()} but no resumable "
                                "state (checkpoints/state was removed?); it will not be retrained over silently: "
                                "pass a new --workdir")
    log(f'{size} replicas ({", ".join(r.name for r in setup.replicas)}) of {setup.model.name} on {data.name} '
        f'({data.num_train} train / {data.val_labels.size} val / {data.test_labels.size} test), '
        f'{setup.steps_per_epoch} steps per epoch, strategy {lifting.kind}, backend {jax.default_backend()}')
    if restored is not None:
        start, state, saved = restored
        restored_progress = hooks_lib.Progress.from_checkpoint(saved)
        progress.running[:], progress.converged_epoch[:] = restored_progress.running, restored_progress.converged_epoch
        progress.diverged_epoch[:] = restored_progress.diverged_epoch
        for name in files:
            run.truncate_metrics(start, name)
        keep = settings.checkpoint
        if keep_epoch(start, keep.every, keep.epochs) or not progress.running.any() or start == epochs:
            checkpoints.save_epoch(start, state.variables)  # its asynchronous save may have been cut off
        log(f'resuming {run.path} after epoch {start}')
    else:  # drop epoch-0 rows written before a kill cut off the first state save
        for name in files:
            run.truncate_metrics(-1, name)
        start, state = 0, initial
        evaluate.before_epoch(None, 0)  # epoch 0, the initialisation: evaluated and saved, not trained
        for hook in hooks:
            if isinstance(hook, (hooks_lib.Evaluate, hooks_lib.InputGradientRecord, hooks_lib.Save)):
                hook.after_epoch(None, 0, state, None)

    keys = data_keys(train_settings, setup.replicas)
    shared = bool(np.all(keys == keys[0]))
    keys = jnp.asarray(keys[0] if shared else keys)
    own = {'labels': jnp.asarray(setup.noise.labels), 'noise_mask': jnp.asarray(setup.noise.mask)}
    common = {'pool': pool}
    (common if shared else own)['data_key'] = keys
    steps = setup.steps_per_epoch
    chunk = min(train_settings.steps_per_call or default_steps_per_call(), steps)
    state = fit(trainable, state, epochs=range(start + 1, epochs + 1),
                batches=_run_batches(keys, shared, data.num_train, steps, train_settings.batch_size, size),
                own=own, common=common, lifting=lifting, batch_size=train_settings.batch_size, chunk_steps=chunk,
                hooks=hooks, running=progress.running,
                progress=lambda total, name: progress_bar(total, f'{name}/{epochs}'))
    checkpoints.close()
    final = int(run.last_metrics_epoch())
    diverged = [setup.replicas[i].name for i in np.flatnonzero(progress.diverged_epoch >= 0)]
    run.set_status(status='complete', epoch=final, converged_epoch=[int(e) for e in progress.converged_epoch],
                   diverged_epoch=[int(e) for e in progress.diverged_epoch], diverged=diverged)


def _input_gradient_meter(setup: Setup, runner, lifting: Lifting) -> InputGradientMeter:
    settings, data = setup.settings.train, setup.dataset
    n = min(settings.input_gradient_examples or data.num_train, data.num_train)
    return InputGradientMeter(runner, data.train_images[:n], setup.noise.labels[:, :n],
                              settings.input_gradient_definition, lifting=lifting,
                              batch_size=settings.batch_size if settings.input_gradient_definition ==
                              'train_normalised' else 256)

