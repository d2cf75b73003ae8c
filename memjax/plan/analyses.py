"""The main program of each listed analysis, as a plan `Job` built from shapes only.

Each builder returns the Jobs of one analysis: the program that dominates its
cost, built from the analysis's own functions (so the plan compiles what the
analysis runs), and how often it runs at most:

- convergence, noisy_vs_clean, cka_matrix: one block of the full-batch Grams
  (`GramMaker`'s unit features of two blocks of forward_batch examples and
  their Gram block), beside the Grams of the models held (L x N^2 x 4 bytes
  each); minibatch CKA: the features and Grams of one minibatch;
- stitching: one training step of the K stitch layers of a seed at the first
  stitch point (`Stitched.step`, lifted);
- neurons: one step of the critical-neuron search at `parallel` examples
  (`search_compiler`; None: the most that fit, as the analysis chooses);
- dissimilarity: the activation-maximisation ascent of all replicas
  (`Ascent`, lifted; its loop body counted `iterations` times);
- input_gradients: G of one batch of every replica (`GradientMagnitude`);
- manifolds: the MFTMA geometry of one layer's class manifolds (the batched
  QP; its loop counted `solver_iterations` times, an upper bound).
Analyses without a builder get a row that says so (not costed).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from memjax.analysis.localization.neuron_memory import AUTO_CAP
from memjax.engine.lifting import Lifting, lift
from memjax.plan.accelerators import Accelerator, planned_lifting
from memjax.plan.programs import Job, jit_compile, memory as program_memory, tpu_layout
from memjax.plan.shapes import RunShape
from memjax.plan.training import gradient_job

F32 = jnp.float32


def _spec(shape, dtype=F32) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(tuple(shape), dtype)


def _lead(tree, n: int | None):
    return tree if n is None else jax.tree_util.tree_map(lambda a: _spec((n, *a.shape), a.dtype), tree)


def _lifting(shape: RunShape, size: int, chip: Accelerator) -> Lifting:
    return planned_lifting(shape.settings.train.strategy, size, chip)[0]


# CKA ---------------------------------------------------------------------------------------------------------

def cka_jobs(shape: RunShape, name: str, chip: Accelerator) -> list[Job]:
    from memjax.analysis.similarity.cka import _gram_block, stacked_grams
    from memjax.analysis.similarity.representations import GramMaker
    s = shape.analyses['cka']
    runner = shape.runner(analysis=True)
    maker = GramMaker(runner, s)
    static = maker._static
    variables = shape.variables(analysis=True)
    n, units = s.num_examples, len(maker.names)
    listed = set(shape.listed)
    held = 2 if name == 'cka_matrix' or not {'convergence', 'noisy_vs_clean'} <= listed else 3
    models = (shape.size * len(shape.kept_epochs) if name != 'cka_matrix' else 2 * len(shape.noisy))
    if s.full_batch:
        block = min(s.forward_batch, n)
        blocks = -(-n // block)

        def gram_block(v, a, b):
            return _gram_block(runner.features(v, a, **static), runner.features(v, b, **static))

        specs = (variables, shape.images(block), shape.images(block))
        calls = models * blocks * (blocks + 1) // 2
        resident = held * units * n * n * 4.0
        what = f'Gram block ({units} units, 2 x {block} examples)'
        count = f'{models} models x {blocks * (blocks + 1) // 2} blocks'
        fn = gram_block
    else:
        batch = s.minibatch_size

        def fn(v, x):
            return stacked_grams(runner.features(v, x, **static), s.kernel, s.debiased, s.bandwidth)

        specs = (variables, shape.images(batch))
        calls = models * (n // batch)
        resident = held * units * n * batch * 4.0
        what = f'minibatch Grams ({units} units, {batch} examples)'
        count = f'{models} models x {n // batch} minibatches'
    if name == 'noisy_vs_clean' and 'convergence' in listed:
        calls, count = 0, 'shares the Grams of convergence (one pass)'
    return [Job(name, what, lambda: jit_compile(('cka', runner, s), fn, *specs), calls=calls,
                count=count + (' (when both CKA-over-training analyses are listed, each Gram is formed once)'
                               if name == 'convergence' and 'noisy_vs_clean' in listed else ''),
                dtype='float32', resident=resident, layout=tpu_layout(shape.analysis_model, shape.image_shape),
                fix=f'--config.analysis.cka.num_examples={n // 2} or --config.analysis.cka.minibatch_size=1000 '
                    '(with analysis.cka.estimator=debiased)',
                note=f'holds {held} models\' Grams: {resident / 1e9:.1f} GB')]


# Stitching ---------------------------------------------------------------------------------------------------

def stitching_jobs(shape: RunShape, name: str, chip: Accelerator) -> list[Job]:
    from memjax.analysis.stitching.stitch_layer import StitchLayer
    from memjax.analysis.stitching.stitch_trainer import Stitched, stitch_points
    from memjax.engine.fit import Chunk
    from memjax.train.state import OptimizerSpec
    s = shape.analyses['stitching']
    model = shape.analysis_model
    runner = shape.runner(analysis=True)
    points = stitch_points(model, s.points, s.include_stem)
    seeds = sorted({r.seed for r in shape.replicas if r.noise_ratio == 0} & {r.seed for r in shape.noisy})
    k = max(1, len(shape.noisy) // max(1, len(seeds)))
    lifting = _lifting(shape, k, chip)
    point = points[0]
    optimizer = OptimizerSpec(s.optimizer, s.learning_rate, 'constant', momentum=0.9)
    variables = shape.variables(analysis=True)
    probe = jax.eval_shape(lambda v, x: Stitched(runner, point, StitchLayer(1), optimizer).activation(v, x),
                           variables, shape.images(2))
    layer = StitchLayer(probe.shape[-1], s.batchnorm)
    stitched = Stitched(runner, point, layer, optimizer)
    stitch = jax.eval_shape(lambda: layer.init(jax.random.PRNGKey(0), jnp.zeros(probe.shape, F32)))
    state = jax.eval_shape(stitched.init, stitch)
    per = None if lifting.kind == 'loop' else k
    batch, steps = s.batch_size, shape.num_val // s.batch_size
    per_args = {'state': _lead(state, per), 'steps': _spec(() if per is None else (per,), jnp.int32),
                'active': _spec(() if per is None else (per,), jnp.bool_), 'own': {'head': _lead(variables, per)}}
    shared = {'order': _spec((steps * batch,), jnp.int32), 'weights': None, 'first_step': _spec((), jnp.int32),
              'epoch': _spec((), jnp.int32),
              'common': {'base': variables, 'images': shape.images(shape.num_val),
                         'labels': _spec((shape.num_val,), jnp.int32)}}
    fn = lift(Chunk(stitched, batch), tuple(per_args), lifting, static=('num_steps',), carry='state') \
        .compiled(num_steps=1)
    loops = 1 if per else k
    calls = 2 * len(seeds) * len(points) * s.epochs * steps * loops
    return [Job(name, f'stitch step ({lifting.kind}, {k} stitches, batch {batch}, after {model.stage_names[point - 1]})',
                lambda: jit_compile(('stitch', stitched, lifting), fn, per_args, shared), calls=calls,
                count=f'2 directions x {len(seeds)} seeds x {len(points)} points x {s.epochs} epochs x {steps} steps'
                      + (f' x {k} stitches' if loops > 1 else ''), dtype='float32',
                fix=f'--config.analysis.stitching.batch_size={max(1, batch // 2)}')]


# Critical neurons --------------------------------------------------------------------------------------------

def neuron_jobs(shape: RunShape, name: str, chip: Accelerator) -> list[Job]:
    from memjax.analysis.localization.neurons import search_compiler
    s = shape.analyses['neurons']
    model = shape.analysis_model
    variables = shape.variables(analysis=True)
    h = shape.image_shape
    n = s.num_clean + s.num_noisy

    def compiler(settings):
        return search_compiler(model, variables, _spec((n, *h)), _spec((n,), jnp.int32),
                               _spec((shape.num_train, *h)), _spec((shape.num_train,), jnp.int32), settings,
                               _spec((2,), jnp.uint32))

    compile_at = compiler(s)
    layout = tpu_layout(model, h) if chip.kind == 'tpu' else 1.0
    memory = lambda compiled: program_memory(compiled, layout)
    replicas = len(shape.noisy)

    def chosen():
        """(compiled, row fields): at analysis.neurons.parallel, or the most examples that fit the chip."""
        if s.parallel is not None:
            e = s.parallel
            compiled = compile_at(e)
            fits_at = _largest(compile_at, memory, chip.limit, min(n, AUTO_CAP)) if memory(compiled) > chip.limit \
                else e
            fix = '' if fits_at == e else f'--config.analysis.neurons.parallel={fits_at}' if fits_at else \
                _reference_fix(s, compiler, memory, chip.limit)
        else:
            e = _largest(compile_at, memory, chip.limit, min(n, AUTO_CAP))
            fix = '' if e else _reference_fix(s, compiler, memory, chip.limit)
            e = e or 1
            compiled = compile_at(e)
        chunks = -(-n // e)
        return compiled, {'calls': replicas * chunks * s.max_neurons, 'fix': fix,
                          'name': f'search step ({e} examples at once, {s.noise_copies} x (1 + {s.reference_batch}) '
                                  'images each)',
                          'count': f'{replicas} noisy replicas x {chunks} chunks of {e} x {s.max_neurons} removals '
                                   '(at most)'}

    return [Job(name, 'search step', chosen, calls=0, count='', dtype='float32', layout=layout,
                note='parallel=None: the examples at once that fit this chip' if s.parallel is None else '')]


def _largest(compile_at, memory, limit: float, cap: int) -> int:
    """The most examples at once (<= cap) whose search step fits `limit` bytes (0: not even one)."""
    one = memory(compile_at(1))
    if one > limit:
        return 0
    if cap == 1:
        return 1
    per = max(memory(compile_at(2)) - one, 1.0)
    e = int(max(1, min(cap, 1 + (limit - one) // per)))
    while e > 1 and memory(compile_at(e)) > limit:
        e = max(1, e // 2)
    return e


def _reference_fix(s, compiler, memory, limit: float) -> str:
    """The largest reference batch (a multiple of 32 when over 64) whose one-example step fits `limit`,
    checked by compiling it (the step's memory is about linear in 1 + reference_batch)."""
    one = memory(compiler(s)(1))
    rb = int((1 + s.reference_batch) * limit / one) - 1
    for _ in range(6):
        rb = rb // 32 * 32 if rb > 64 else rb
        if rb < 1:
            break
        if memory(compiler(dataclasses.replace(s, reference_batch=rb))(1)) <= limit:
            return (f'--config.analysis.neurons.reference_batch={rb} (P3: 512; or fewer '
                    f'--config.analysis.neurons.noise_copies)')
        rb = int(rb * 0.8)
    return ('--config.analysis.neurons.reference_batch and .noise_copies lower: one example does not fit even at a '
            'small reference batch')


# Activation maximisation, input gradients, MFTMA ---------------------------------------------------------------

def ascent_jobs(shape: RunShape, name: str, chip: Accelerator) -> list[Job]:
    from memjax.analysis.dissection.activation_maximization import Ascent
    from memjax.models.dcgan import dcgan
    s = shape.analyses['dissimilarity']
    runner = shape.runner(analysis=True)
    generator, _ = dcgan(shape.image_shape, s.generator_width)
    g_vars = jax.eval_shape(lambda: generator.init(jax.random.PRNGKey(0), jnp.zeros((1, 100), F32)))
    lifting = _lifting(shape, shape.size, chip)
    per = None if lifting.kind == 'loop' else shape.size
    seeds = s.seed_chunk or s.num_seeds
    fn = lift(Ascent(runner.pixel_logits, generator, s.iterations, s.learning_rate, s.objective), ('variables',),
              lifting).compiled()
    per_args = {'variables': _lead(shape.variables(analysis=True), per)}
    shared = {'g_vars': g_vars, 'z0': _spec((seeds, 100)), 'classes': _spec((shape.num_classes,), jnp.int32)}
    chunks = -(-s.num_seeds // seeds)
    calls = chunks * (shape.size if per is None else 1)
    return [Job(name, f'activation-maximisation ascent ({lifting.kind}, {shape.num_classes} classes x {seeds} seeds)',
                lambda: jit_compile(('ascent', runner, s, lifting), fn, per_args, shared), calls=calls,
                count=f'{chunks} seed chunks' + (f' x {shape.size} replicas' if per is None else '')
                      + ' (this run only; other_runs add theirs)',
                iterations=s.iterations, fix=f'--config.analysis.dissimilarity.seed_chunk={max(1, seeds // 4)}')]


def input_gradient_jobs(shape: RunShape, name: str, chip: Accelerator) -> list[Job]:
    s = shape.analyses['input_gradients']
    t = shape.settings.train
    if s.source != 'checkpoints' and t.input_gradients:
        return [Job(name, 'G read from the training record', None, calls=0, count='',
                    note='train.input_gradients: costed in the training section')]
    d = t.input_gradient_definition if s.definition == 'run' else s.definition
    n = min(s.num_examples or shape.num_train, shape.num_train)
    epochs = len(s.epochs) or len(shape.kept_epochs)
    return [gradient_job(shape, name, d, n, epochs, _lifting(shape, shape.size, chip), 'kept epochs')]


def manifold_jobs(shape: RunShape, name: str, chip: Accelerator) -> list[Job]:
    from memjax.analysis.geometry.mftma import _anchor_geometry
    s = shape.analyses['manifolds']
    p = len(s.classes) or shape.num_classes
    m, t = s.examples_per_class, s.n_t
    d1 = m + 1
    specs = (_spec((p, m, d1)), _spec((p, m), jnp.bool_), _spec((p, t, d1)), _spec((p,)), _spec(()))

    def fn(points, mask, tv, dims, kappa):
        return _anchor_geometry(points, mask, tv, dims, kappa, eps=1e-8, tol=1e-5, max_iters=s.solver_iterations)

    stages = len(s.stages) or len(shape.analysis_model.stage_names)
    epochs = len(s.epochs) or s.num_epochs
    calls = shape.size * epochs * stages * 2
    return [Job(name, f'MFTMA geometry ({p} manifolds x {m} points, n_t={t})',
                lambda: jit_compile(('mftma', p, m, t, s.solver_iterations), fn, *specs), calls=calls,
                count=f'{shape.size} replicas x {epochs} epochs x {stages} stages x 2 (unpermuted, permuted; at most)',
                iterations=s.solver_iterations, note='QP iterations counted at their cap (an upper bound)')]


BUILDERS = {'convergence': cka_jobs, 'noisy_vs_clean': cka_jobs, 'cka_matrix': cka_jobs,
            'stitching': stitching_jobs, 'neurons': neuron_jobs, 'dissimilarity': ascent_jobs,
            'input_gradients': input_gradient_jobs, 'manifolds': manifold_jobs}


def analysis_jobs(shape: RunShape, chip: Accelerator, only: tuple = ()) -> list[Job]:
    """The Jobs of every listed analysis (or of those in `only`), in the config's order (an uncosted row for
    those without a builder)."""
    jobs = []
    for name in shape.listed:
        if only and name not in only:
            continue
        if name in BUILDERS:
            jobs += BUILDERS[name](shape, name, chip)
        else:
            jobs.append(Job(name, 'not costed by the plan', None, calls=0, count='',
                            note='its programs are training-sized steps or forward passes (see its module)'))
    return jobs
