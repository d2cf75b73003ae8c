"""Critical neurons (P3 section 6.1, Fig. 5): how many neurons flip one example's prediction.

For one example (x, y), with y the label the model was trained on, remove one
candidate neuron at a time until the prediction flips or `max_neurons` are
gone. The candidates and their removal (`candidates`; see
`memjax.analysis.localization.neuron_candidates`): 'channels' (the default,
P3's text: a conv channel or a hidden linear unit, removed by zeroing its
activation, and with `classifier_weights` the classifier's single weights)
or 'p3_code' (P3's public code: each conv kernel's output channel, each
BatchNorm scale and bias element, each weight and bias of a linear layer, as
separate candidates, removed by zeroing those parameters). ViTs are refused:
a block's output channel carries the skip path. The objective is

  J(m) = l(Fbar_m(x), y) - mean_b l(Fbar_m(x_b), y_b)

over a random training batch b of `reference_batch` examples (redrawn every
step; P3's code uses one fixed batch of 512 that holds the example, its first
training batch), where Fbar averages the logits over `noise_copies`
Gaussian-noised copies of each input, as P3's code (so the search cannot use
adversarial directions). `noise`: 'relative' (default): each copy's noise has
L2 norm `noise_scale` (1%) of that input's L2 norm (of the normalised input
the model receives; P3's code scales one noise tensor to 1% of the whole
batch's norm, which is the same per input when inputs have similar norms);
'fixed': i.i.d. noise of std `noise_std`. The candidate removed is the one
whose removal increases J most to first order, `score`:

- 'param_grad' (default): -sum of theta x dJ/dtheta over the candidate's
  parameters. For a 'channels' channel these are every parameter of its layer
  indexed by the output channel (ConvBN: the conv kernel's output slice AND
  the BatchNorm scale and bias; Dense: the kernel column and the bias), whose
  zeroing zeroes the channel exactly; for a 'p3_code' candidate its own
  parameters (P3's code scores param x grad per tensor, summing a conv
  kernel over its output channel's slice).
- 'mask_grad': -dJ/dm_j, the gradient with respect to the candidate's mask
  entry (for parameter masks, 'p3_code' and classifier weights, the same
  number as param_grad).

The prediction flip is checked through the same noise-averaged classifier
Fbar that ranks the neurons (P3's code, after its September 2023 fix, tests
argmax of the noise-averaged output), on fresh noise. An example enters the
search only if Fbar predicts its label before any removal (P3's code counts
such an example as flipped after 0 removals). Many examples are searched at
once: the step is vmapped over examples, each with its own mask; how many
(`parallel`, None: chosen from the device's memory) is
`memjax.analysis.localization.neuron_memory`'s. Every example's random draws
(noise, reference batches) come from a key folded with its position, so the
results do not depend on `parallel`.

Recorded per example: the count, whether it flipped, whether the search hit
`max_neurons` without a flip (censored: its count is only known to be larger
than the cap), how many removed neurons sit in each unit (P3's layer groups
by default, `granularity`; P3 Fig. 5), and the accuracy of the plain model on
the rest of the training set (a fixed random subset of `accuracy_examples`,
the searched examples excluded; P3's code evaluates the whole training set)
before and after the removal. Per replica: censored counts, mean counts of
the flipped (uncensored) examples, and the AUC of (-count) as a detector of
mislabelled examples with the censoring explicit (`censored_auc`). P3 reports
15.7 vs 5.1 neurons and AUC 0.89.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import ClassVar
import os

import jax
import jax.numpy as jnp
import numpy as np

from memjax.analysis.localization.layer_groups import chosen_units, granularity_setting
from memjax.analysis.localization.neuron_candidates import (CANDIDATES, channel_scores, full_masks, mask_layer,
                                                            masked_logits, removal_scores)
from memjax.analysis.localization.neuron_memory import fit_parallel, memory_budget, out_of_memory
from memjax.analysis.localization.neuron_statistics import censored_auc, detection_auc
from memjax.analysis.settings import AT_LEAST_1, AnalysisSettings, Context, NON_NEGATIVE, POSITIVE, SEED, setting
from memjax.data.pipeline import normalize
from memjax.models import StagedModel
from memjax.engine.compiled import abstract, compile_once
from memjax.errors import ConfigError
from memjax.report import p3_plots
from memjax.report.tables import write_csv
from memjax.run import Run

__all__ = ['Settings', 'channel_scores', 'critical_neuron_search', 'accuracy_after_removal', 'censored_auc',
           'detection_auc', 'input_noise', 'run']

NAME = 'neurons'
NOISE_MODES = ('relative', 'fixed')
SCORES = ('param_grad', 'mask_grad')
ACCURACY_BLOCK = 1000  # examples per forward pass of the accuracy after removal
_INITIAL, _PICK = 1_000_003, 2_000_003  # salts of an example's key: first prediction, reference batches


@dataclasses.dataclass(frozen=True)
class Settings(AnalysisSettings):
    """`analysis.neurons`: the critical-neuron search of P3 section 6.1."""

    KEY: ClassVar[str] = 'neurons'
    SMOKE: ClassVar[dict] = dict(num_clean=2, num_noisy=2, max_neurons=3, reference_batch=8, accuracy_examples=16,
                                 parallel=4, noise_copies=2)

    num_clean: int = setting(32, 'clean training examples searched per replica (P3: 1000)', range=NON_NEGATIVE)
    num_noisy: int = setting(32, 'noisy training examples searched per replica (P3: 1000)', range=NON_NEGATIVE)
    max_neurons: int = setting(30, 'cap on neurons removed per example', range=AT_LEAST_1)
    candidates: str = setting('channels', "channels: conv channels and hidden linear units, removed by zeroing the "
                              "activation (P3's text); p3_code: conv kernel channels, BatchNorm scale and bias "
                              "elements, linear weights and biases, removed by zeroing them (P3's code)",
                              choices=CANDIDATES)
    noise: str = setting('relative', "input noise of the averaged classifier: relative (L2 norm noise_scale x the "
                         "input's, P3 code) or fixed (std noise_std)", choices=NOISE_MODES)
    noise_scale: float = setting(0.01, 'relative noise: noise L2 norm / input L2 norm (P3: 1%)', range=NON_NEGATIVE)
    noise_std: float = setting(0.1, 'fixed noise: std in normalised units', range=NON_NEGATIVE)
    score: str = setting('param_grad', "param_grad: sum of parameter x gradient over the candidate's parameters "
                         "(P3 code); mask_grad: gradient at the candidate's mask entry", choices=SCORES)
    noise_copies: int = setting(5, 'noisy copies in the averaged classifier', range=AT_LEAST_1)
    reference_batch: int = setting(32, 'random training examples in the objective\'s mean loss', range=AT_LEAST_1)
    accuracy_examples: int = setting(256, 'training examples (not searched) for the accuracy before/after removal',
                                     range=AT_LEAST_1)
    granularity: str = granularity_setting()
    parallel: int | None = setting(None, 'examples searched at once (vmap); None: as many as fit the device memory',
                                   range=AT_LEAST_1)
    memory_budget_gb: float | None = setting(None, 'memory one search program may use (None: 90% of the free '
                                             'device memory; on a CPU half the available host memory)',
                                             range=POSITIVE)
    seed: int = setting(0, 'seed of the example choice and input noise', range=SEED)
    classifier_weights: bool = setting(True, "channels: the classifier's single weights are candidates too (P3: in "
                                       'a linear layer a single weight is zeroed)')

    def validate(self) -> None:
        if self.num_clean + self.num_noisy == 0:
            raise self.error('num_clean', 'and num_noisy are both 0: nothing to search; raise one')

    def check_model(self, model) -> None:
        if model.name in ('vit', 'vit_small'):
            raise ConfigError(f"analysis.neurons is not defined for {model.name}: a transformer block's output "
                              'channel carries the skip path, so zeroing it is not removing a neuron; drop '
                              "'neurons' from analyses")


def input_noise(key, x, copies: int, mode: str, scale: float, std: float):
    """Noise [copies, B, ...] for x [B, ...]: relative (each copy's L2 norm = scale x the input's) or fixed std."""
    z = jax.random.normal(key, (copies, *x.shape), jnp.float32)
    if mode == 'fixed':
        return (std * z).astype(x.dtype)
    axes = tuple(range(2, z.ndim))  # one example's axes in z
    norm_x = jnp.sqrt(jnp.sum(jnp.square(x.astype(jnp.float32)), axis=tuple(range(1, x.ndim))))  # [B]
    norm_z = jnp.sqrt(jnp.sum(jnp.square(z), axis=axes))  # [copies, B]
    factor = scale * norm_x[None] / jnp.maximum(norm_z, 1e-12)
    return (z * factor.reshape(factor.shape + (1,) * len(axes))).astype(x.dtype)


def _averaged_log_probs(model, variables, x, masks, key, settings):
    """log softmax of Fbar, the logits averaged over noisy copies (P3's code). x: [B, ...] -> [B, K]."""
    copies = settings.noise_copies
    noise = input_noise(key, x, copies, settings.noise, settings.noise_scale, settings.noise_std)
    logits = masked_logits(model, variables, (x[None] + noise).reshape((-1, *x.shape[1:])), masks)
    return jax.nn.log_softmax(logits.astype(jnp.float32).reshape((copies, x.shape[0], -1)).mean(0))


def _search_step(model, variables, settings: Settings, masks, done, count, x, y, ref_x, ref_y, key):
    """One removal for one example (vmapped over examples by the caller)."""
    def objective(params, m):
        v = {**variables, 'params': params}
        own = _averaged_log_probs(model, v, x[None], m, key, settings)
        ref = _averaged_log_probs(model, v, ref_x, m, jax.random.fold_in(key, 1), settings)
        ce = lambda lp, t: -jnp.take_along_axis(lp, t[:, None], axis=1).mean()
        return ce(own, y[None]) - ce(ref, ref_y)

    names = list(masks)
    raw = removal_scores(model, variables, masks, objective, settings.score)
    scores = jnp.concatenate([jnp.where(masks[n] > 0, raw[n], -jnp.inf) for n in names])
    best = jnp.argmax(scores)
    flat = jnp.concatenate([masks[n] for n in names])
    flat = jnp.where(done, flat, flat.at[best].set(0.0))
    sizes = np.cumsum([0] + [masks[n].shape[0] for n in names])
    new_masks = {n: flat[sizes[i]:sizes[i + 1]] for i, n in enumerate(names)}
    count = jnp.where(done, count, count + 1)
    prediction = jnp.argmax(_averaged_log_probs(model, variables, x[None], new_masks, jax.random.fold_in(key, 2),
                                                settings)[0])
    return new_masks, done | (prediction != y), count


def _pad(a, e: int):
    """a [n, ...] padded to [e, ...] by repeating its first row."""
    a = jnp.asarray(a)
    return a if a.shape[0] == e else jnp.concatenate([a, jnp.broadcast_to(a[:1], (e - a.shape[0], *a.shape[1:]))])


def search_compiler(model: StagedModel, variables: dict, x: jax.Array, y: jax.Array, ref_x: jax.Array,
                    ref_y: jax.Array, settings: Settings, key: jax.Array):
    """E -> the search step compiled for E examples at once (arguments as `critical_neuron_search`'s; arrays
    or their shapes, `jax.ShapeDtypeStruct`: only shapes and dtypes are read, so `memjax.plan` compiles it
    without data)."""
    start = full_masks(model, variables['params'], settings.candidates, settings.classifier_weights)
    rb = settings.reference_batch
    vstep = jax.vmap(lambda v, m, d, c, xi, yi, rx, ry, k: _search_step(model, v, settings, m, d, c, xi, yi, rx, ry, k),
                     in_axes=(None, 0, 0, 0, 0, 0, 0, 0, 0))

    def compile_at(e: int):  # compiled once per process for the model, settings and shapes
        args = (abstract(variables), abstract(start, e), jax.ShapeDtypeStruct((e,), jnp.bool_),
                jax.ShapeDtypeStruct((e,), jnp.int32), jax.ShapeDtypeStruct((e, *x.shape[1:]), x.dtype),
                jax.ShapeDtypeStruct((e, *y.shape[1:]), y.dtype),
                jax.ShapeDtypeStruct((e, rb, *ref_x.shape[1:]), ref_x.dtype),
                jax.ShapeDtypeStruct((e, rb), ref_y.dtype), abstract(key, e))
        return compile_once(('neuron search step', model, settings), vstep, *args)

    return compile_at


@functools.lru_cache(maxsize=16)
def _first_prediction(model: StagedModel, settings: Settings):
    """E examples -> the noise-averaged prediction of each before any removal (compiled once per process)."""
    return jax.jit(jax.vmap(lambda v, xi, k: jnp.argmax(_averaged_log_probs(
        model, v, xi[None], None, jax.random.fold_in(k, _INITIAL), settings)[0]), in_axes=(None, 0, 0)))


@functools.lru_cache(maxsize=16)
def _reference_picks(reference_batch: int, pool: int):
    """(example keys [E], iteration) -> each example's reference batch [E, reference_batch] of pool positions."""
    return jax.jit(jax.vmap(lambda k, it: jax.random.randint(jax.random.fold_in(jax.random.fold_in(k, _PICK), it),
                                                             (reference_batch,), 0, pool), in_axes=(0, None)))


@functools.lru_cache(maxsize=16)
def _plain_prediction(model: StagedModel):
    """The plain model's predictions [B] of normalised inputs [B, ...] (compiled once per process)."""
    return jax.jit(lambda v, x: jnp.argmax(model.apply(v, x).output, -1))


def critical_neuron_search(model: StagedModel, variables: dict, x: jax.Array, y: jax.Array, ref_x: jax.Array,
                           ref_y: jax.Array, settings: Settings, key: jax.Array, log=lambda _: None) -> dict:
    """Greedy removal for every example of x: [E, ...] (normalised) with labels y: [E].

    ref_x: [M, ...], ref_y: [M] a pool the reference batches are drawn from.
    Returns {'count' [E], 'flipped' [E], 'initially_correct' [E] (by the noise-averaged classifier),
    'masks' {key: [E, n]}, 'parallel' (examples searched at once)}.
    """
    n, rb = x.shape[0], settings.reference_batch
    start = full_masks(model, variables['params'], settings.candidates, settings.classifier_weights)
    example_keys = jax.vmap(lambda j: jax.random.fold_in(key, j))(jnp.arange(n))  # one key per example
    compile_at = search_compiler(model, variables, x, y, ref_x, ref_y, settings, key)
    budget = memory_budget(settings.memory_budget_gb)
    e, step = fit_parallel(compile_at, settings.parallel, n, budget, 'critical-neuron search', log)
    first, pick = _first_prediction(model, settings), _reference_picks(rb, ref_x.shape[0])
    out = {'count': [], 'flipped': [], 'initially_correct': [], 'masks': []}
    lo = 0
    while lo < n:
        size = min(e, n - lo)
        xs, ys, ks = _pad(x[lo:lo + size], e), _pad(y[lo:lo + size], e), _pad(example_keys[lo:lo + size], e)
        try:
            correct = np.asarray(first(variables, xs, ks) == ys)
            masks = jax.tree_util.tree_map(lambda v: jnp.broadcast_to(v, (e, *v.shape)), start)
            done = jnp.asarray(~correct | (np.arange(e) >= size))  # padding rows take no part
            count = jnp.zeros(e, jnp.int32)
            for iteration in range(settings.max_neurons):
                if bool(jnp.all(done)):
                    break
                picks = pick(ks, iteration)
                step_keys = jax.vmap(lambda k: jax.random.fold_in(k, iteration))(ks)
                masks, done, count = step(variables, masks, done, count, xs, ys, ref_x[picks], ref_y[picks],
                                          step_keys)
            count, done = np.asarray(count), np.asarray(done)
        except Exception as error:  # the device ran out of memory: fewer examples at once, this chunk again
            if settings.parallel is not None or e == 1 or not out_of_memory(error):
                raise
            e, step = fit_parallel(compile_at, max(1, e // 2), n, budget, 'critical-neuron search', log)
            log(f'  neurons: out of device memory; {e} example(s) at once from now on')
            continue
        out['count'].append(count[:size])
        out['flipped'].append(done[:size] & correct[:size])
        out['initially_correct'].append(correct[:size])
        out['masks'].append(jax.tree_util.tree_map(lambda m: np.asarray(m)[:size], masks))
        lo += size
    masks = jax.tree_util.tree_map(lambda *xs: np.concatenate(xs), *out['masks'])
    return {'count': np.concatenate(out['count']), 'flipped': np.concatenate(out['flipped']),
            'initially_correct': np.concatenate(out['initially_correct']), 'masks': masks, 'parallel': e}


def accuracy_after_removal(model: StagedModel, variables: dict, masks: dict, x: jax.Array, y: jax.Array,
                           parallel: int | None = None, memory_budget_gb: float | None = None,
                           log=lambda _: None) -> np.ndarray:
    """Accuracy on (x [M, ...], y [M]) of the model with each example's masks {key: [E, n]}: [E].

    x is run in blocks of ACCURACY_BLOCK; `parallel` masks at once (None: as many as fit the memory).
    """
    count, m = next(iter(masks.values())).shape[0], x.shape[0]
    block = min(ACCURACY_BLOCK, m)
    blocks = [(lo, min(lo + block, m)) for lo in range(0, m, block)]

    def correct(v, mk, xb, yb, valid):
        return jnp.sum((jnp.argmax(masked_logits(model, v, xb, mk), -1) == yb) * valid)

    vcorrect = jax.vmap(correct, in_axes=(None, 0, None, None, None))
    one = {k: v[0] for k, v in masks.items()}

    def compile_at(e: int):
        return compile_once(('accuracy after removal', model), vcorrect, abstract(variables), abstract(one, e),
                            abstract(x[0], block), abstract(y[0], block), jax.ShapeDtypeStruct((block,), jnp.float32))

    e, program = fit_parallel(compile_at, parallel, count, memory_budget(memory_budget_gb),
                              'accuracy after removal', log)
    totals = []
    for i in range(0, count, e):
        size = min(e, count - i)
        chunk = {k: _pad(v[i:i + size], e) for k, v in masks.items()}
        total = np.zeros(e)
        for lo, hi in blocks:
            valid = jnp.asarray(np.arange(block) < hi - lo, jnp.float32)
            total += np.asarray(program(variables, chunk, _pad(x[lo:hi], block), _pad(y[lo:hi], block), valid))
        totals.append(total[:size])
    return np.concatenate(totals) / m


def run(run: Run, s: Settings, context: Context) -> None:
    """The search on `num_clean` clean and `num_noisy` noisy training examples of every noisy replica."""
    log = context.log
    model, data = run.model, run.dataset
    noisy_replicas = run.noisy_replicas('neurons')
    final_epoch = run.final_epoch()
    rng = np.random.default_rng(s.seed)
    images = jnp.asarray(normalize(data.train_images, data.mean, data.std))
    units, stages = None, []
    rows, summary = [], []
    log(f'neurons: {s.num_clean} clean + {s.num_noisy} noisy examples x {len(noisy_replicas)} replicas, '
        f'at most {s.max_neurons} neurons each; candidates: {s.candidates}')
    for rep in noisy_replicas:
        variables = run.replica_variables(final_epoch, rep.index)
        if units is None:  # the units that hold candidates (P3 Fig. 5's bars)
            layers = {mask_layer(k) for k in full_masks(model, variables['params'], s.candidates,
                                                        s.classifier_weights)}
            units = [u for u in chosen_units(model, s.granularity) if set(u.layers) & layers]
            stages = [u.name for u in units]
        labels, mask = run.noise['labels'][rep.index], run.noise['noise_mask'][rep.index]
        chosen = {'clean': rng.permutation(np.flatnonzero(~mask))[:s.num_clean],
                  'noisy': rng.permutation(np.flatnonzero(mask))[:s.num_noisy]}
        index = np.concatenate([chosen['clean'], chosen['noisy']])
        kinds = ['clean'] * len(chosen['clean']) + ['noisy'] * len(chosen['noisy'])
        result = critical_neuron_search(model, variables, images[index], jnp.asarray(labels[index]), images,
                                        jnp.asarray(labels), s, jax.random.PRNGKey(s.seed + rep.index), log)
        rest = np.setdiff1d(np.arange(labels.size), index)
        subset = rng.permutation(rest)[:s.accuracy_examples]
        x, y = images[subset], jnp.asarray(labels[subset])
        after = accuracy_after_removal(model, variables, result['masks'], x, y, s.parallel, s.memory_budget_gb, log)
        predict = _plain_prediction(model)
        before = float(np.mean(np.concatenate([np.asarray(predict(variables, x[i:i + ACCURACY_BLOCK]))
                                               for i in range(0, len(subset), ACCURACY_BLOCK)]) == labels[subset]))
        removed = {u.name: sum(np.sum(m == 0, axis=1) for k, m in result['masks'].items()
                               if mask_layer(k) in u.layers) for u in units}
        for j, example in enumerate(index):
            if not result['initially_correct'][j]:
                continue
            flipped = bool(result['flipped'][j])
            rows.append({**run.row(rep.index), 'kind': kinds[j],
                         'example': int(example), 'neurons': int(result['count'][j]), 'flipped': flipped,
                         'censored': not flipped,
                         'accuracy_before': before, 'accuracy_after': float(after[j]),
                         'accuracy_drop': before - float(after[j]), 'granularity': s.granularity,
                         **{f'removed_{name}': int(removed[name][j]) for name in stages}})
        mine = {k: [r for r in rows if r['replica'] == rep.index and r['kind'] == k] for k in ('clean', 'noisy')}
        counts = {k: np.array([r['neurons'] for r in v]) for k, v in mine.items()}
        censored = {k: np.array([not r['flipped'] for r in v], bool) for k, v in mine.items()}
        auc = censored_auc(counts['clean'], censored['clean'], counts['noisy'], censored['noisy'])
        row = {**run.row(rep.index), 'candidates': s.candidates, 'cap': s.max_neurons, 'score': s.score}
        for k in ('clean', 'noisy'):
            flipped = counts[k][~censored[k]]
            row[f'searched_{k}'] = int(counts[k].size)
            row[f'censored_{k}'] = int(censored[k].sum())
            row[f'mean_neurons_{k}'] = float(np.mean(flipped)) if flipped.size else None
            # restricted mean: a censored search counts as the cap (a lower bound of its mean)
            row[f'restricted_mean_neurons_{k}'] = (float(np.mean(np.minimum(counts[k], s.max_neurons)))
                                                   if counts[k].size else None)
            drops = [r['accuracy_drop'] for r in mine[k] if r['flipped']]
            row[f'mean_accuracy_drop_{k}'] = float(np.mean(drops)) if drops else None
        summary.append({**row, **{f'{key}_noisy_detection' if key.startswith('auc') else f'{key}_pairs': value
                                  for key, value in auc.items()}})
        log(f"  r={rep.noise_ratio:g} seed {rep.seed}: flipped after {row['mean_neurons_clean']} (clean) / "
            f"{row['mean_neurons_noisy']} (noisy) neurons on average; censored at {s.max_neurons}: "
            f"{row['censored_clean']}/{row['searched_clean']} clean, {row['censored_noisy']}/{row['searched_noisy']} "
            f"noisy; AUC {auc['auc']:.3f} (bounds {auc['auc_low']:.3f}-{auc['auc_high']:.3f})")
    out = context.output
    write_csv(os.path.join(out, 'neurons.csv'), rows,
              ('replica', 'noise_ratio', 'seed', 'kind', 'example', 'neurons', 'flipped', 'censored', 'accuracy_before',
               'accuracy_after', 'accuracy_drop', 'granularity', *[f'removed_{st}' for st in stages]))
    write_csv(os.path.join(out, 'summary.csv'), summary,
              ('replica', 'noise_ratio', 'seed', 'candidates', 'score', 'cap', 'searched_clean', 'censored_clean',
               'mean_neurons_clean', 'restricted_mean_neurons_clean', 'mean_accuracy_drop_clean', 'searched_noisy',
               'censored_noisy', 'mean_neurons_noisy', 'restricted_mean_neurons_noisy', 'mean_accuracy_drop_noisy',
               'auc_noisy_detection', 'auc_low_noisy_detection', 'auc_high_noisy_detection',
               'auc_determined_noisy_detection', 'undetermined_pairs'))
    p3_plots.neuron_counts(os.path.join(context.figures, 'neurons.png'), rows, stages, s.max_neurons)
    log('  neurons: results/neurons/neurons.csv, summary.csv, figures/neurons.png (means over flipped examples; '
        'searches that hit the cap are censored, counted separately, and enter the AUC as described in '
        'censored_auc)')
