"""The training programs of a plan: one step of the run's fit loop under the planned lifting, and its evaluation.

The step is exactly the program `memjax.train.loop` runs: `memjax.engine.fit.Chunk`
of `ClassifierTrainable` (augmentation, gradient accounting as configured)
lifted by `memjax.engine.lifting`, compiled for one step. The run compiles
`train.steps_per_call` steps into one call (a `lax.scan` over the same body:
the same memory, the same cost per step). Under `loop` the program is one
replica's and runs R times per step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from memjax.engine.fit import Chunk
from memjax.engine.lifting import Lifting, lift
from memjax.plan.programs import Job, jit_compile, tpu_layout
from memjax.plan.shapes import RunShape
from memjax.train.replica_keys import data_keys
from memjax.train.state import OptimizerSpec
from memjax.train.trainable import ClassifierTrainable

I32 = jnp.int32


def _spec(shape, dtype) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(tuple(shape), dtype)


def _lead(tree, n: int | None):
    """Abstract tree with a leading axis n (None: as it is)."""
    if n is None:
        return tree
    return jax.tree_util.tree_map(lambda a: _spec((n, *a.shape), a.dtype), tree)


def trainable(shape: RunShape, **changes) -> ClassifierTrainable:
    """The run's trainable (`memjax.train.loop._train`'s), optionally with fields changed."""
    t = shape.settings.train
    fields = dict(augment=shape.settings.data.augment, record_gradients=t.gradient_accounting)
    fields.update(changes)
    return ClassifierTrainable(shape.runner(), OptimizerSpec.from_train(t, shape.steps_per_epoch, weight_decay=False),
                               **fields)


def state_spec(shape: RunShape, model_trainable: ClassifierTrainable):
    """One model's TrainState, abstract (with its own weight decay, as the run's)."""
    return jax.eval_shape(lambda v, d: model_trainable.init(v, d), shape.variables(), _spec((), jnp.float32))


def step_job(shape: RunShape, lifting: Lifting, model_trainable: ClassifierTrainable, section: str, name: str,
             calls: int, count: str, models: int, labels_size: int | None = None, note: str = '') -> Job:
    """One compiled step of `model_trainable` for `models` models lifted by `lifting` (calls: compiled calls)."""
    batch = shape.settings.train.batch_size
    per = None if lifting.kind == 'loop' else models
    keys = data_keys(shape.settings.train, list(shape.replicas))
    shared_key = bool((keys == keys[0]).all())
    n = labels_size or shape.num_train
    state = _lead(state_spec(shape, model_trainable), per)
    own = {'labels': _spec((n,), I32), 'noise_mask': _spec((n,), jnp.bool_)}
    common = {'pool': shape.images(shape.pool)}
    (common if shared_key else own)['data_key'] = _spec((2,), jnp.uint32)
    own = _lead(own, per)
    per_args = {'state': state, 'steps': _spec(() if per is None else (per,), I32),
                'active': _spec(() if per is None else (per,), jnp.bool_), 'own': own}
    order_len = shape.steps_per_epoch * batch
    if shared_key:
        shared = {'order': _spec((order_len,), I32)}
    else:
        per_args['order'] = _spec((order_len,) if per is None else (per, order_len), I32)
        shared = {}
    shared.update(weights=None, first_step=_spec((), I32), epoch=_spec((), I32), common=common)
    program = lift(Chunk(model_trainable, batch), tuple(per_args), lifting, static=('num_steps',), carry='state')
    fn = program.compiled(num_steps=1)
    dtype = str(shape.model.dtype)
    return Job(section, name, lambda: jit_compile((section, name, model_trainable, lifting), fn, per_args, shared),
               calls=calls, count=count, dtype='bfloat16' if 'bfloat16' in dtype else 'float32',
               layout=tpu_layout(shape.model, shape.image_shape),
               fix=f'--config.train.strategy=loop (one replica at a time) or --config.train.batch_size='
                   f'{max(1, batch // 2)}' if per
               else f'--config.train.batch_size={max(1, batch // 2)}', note=note)


def training_jobs(shape: RunShape, lifting: Lifting) -> list[Job]:
    """The run's training step and its per-epoch evaluation (see the module doc)."""
    t = shape.settings.train
    size, epochs, steps = shape.size, t.epochs, shape.steps_per_epoch
    loop = lifting.kind == 'loop'
    calls = steps * epochs * (size if loop else 1)
    count = (f'{steps} steps x {epochs} epochs' + (f' x {size} replicas' if loop else '')
             + (' (at most: replicas stop when they converge)' if t.stop_accuracy else ''))
    what = 'one replica' if loop else f'{size} replicas'
    jobs = [step_job(shape, lifting, trainable(shape), 'training', f'train step ({lifting.kind}, {what}, batch '
                     f'{t.batch_size})', calls, count, size)]
    jobs.append(evaluation_job(shape, lifting))
    if t.input_gradients:  # the InputGradientRecord hook, every epoch
        n = min(t.input_gradient_examples or shape.num_train, shape.num_train)
        jobs.append(gradient_job(shape, 'training', t.input_gradient_definition, n, epochs + 1, lifting, 'epochs'))
    return jobs


def gradient_job(shape: RunShape, section: str, definition_name: str, n: int, epochs: int, lifting: Lifting,
                 which: str) -> Job:
    """G (`memjax.train.input_gradients.GradientMagnitude`) of one batch of every replica, over n examples at
    `epochs` epochs (the batch: train.batch_size in training mode, else 256, as `InputGradientMeter`)."""
    from memjax.train.input_gradients import GradientMagnitude, definition
    d = definition(definition_name)
    runner = shape.runner(analysis=section != 'training')
    batch = min(shape.settings.train.batch_size if d.train else 256, n)
    per = None if lifting.kind == 'loop' else shape.size
    fn = lift(GradientMagnitude(runner, d), ('variables', 'labels'), lifting).compiled()
    per_args = {'variables': _lead(shape.variables(analysis=section != 'training'), per),
                'labels': _lead(_spec((batch,), I32), per)}
    shared = {'inputs': _spec((batch, *shape.image_shape), jnp.float32)}
    blocks = -(-n // batch)
    calls = epochs * blocks * (shape.size if per is None else 1)
    return Job(section, f'input gradients G ({lifting.kind}, {batch} examples)',
               lambda: jit_compile(('input gradients', runner, d, lifting), fn, per_args, shared), calls=calls,
               count=f'{epochs} {which} x {blocks} batches of {n} examples'
               + (f' x {shape.size} replicas' if per is None else ''),
               fix=f'--config.train.batch_size={max(1, batch // 2)}' if d.train else '')


def evaluation_job(shape: RunShape, lifting: Lifting) -> Job:
    """Every epoch's evaluation: the models' logits of eval_batch_size images from the pool
    (`ModelRunner.logits`, lifted as the training)."""
    t = shape.settings.train
    runner, batch = shape.runner(), t.eval_batch_size
    loop = lifting.kind == 'loop'
    per = None if loop else shape.size
    blocks = -(-shape.pool // batch)
    calls = blocks * (t.epochs + 1) * (shape.size if loop else 1)
    program = lift(runner.logits, ('variables',), lifting)
    fn = program.compiled()
    per_args = {'variables': _lead(shape.variables(), per)}
    shared = {'images': shape.images(batch)}
    dtype = 'bfloat16' if 'bfloat16' in str(shape.model.dtype) else 'float32'
    return Job('training', f'evaluation ({lifting.kind}, {batch} images)',
               lambda: jit_compile(('evaluation', runner, lifting), fn, per_args, shared), calls=calls,
               count=f'{blocks} blocks of the train/val/test pool x {t.epochs + 1} epochs'
               + (f' x {shape.size} replicas' if loop else ''), dtype=dtype,
               layout=tpu_layout(shape.model, shape.image_shape),
               fix=f'--config.train.eval_batch_size={max(1, batch // 2)}')
