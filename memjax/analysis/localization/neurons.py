"""Critical neurons (P3 section 6.1, Fig. 5): how many neurons flip one example's prediction.

A "neuron" is an output channel of a conv stage or a unit of a dense stage
(every stage but the last), removed by zeroing its activation (a 0 in the
stage's channel mask, `StagedModel.apply(masks=...)`). For one example
(x, y), with y the label the model was trained on, repeat until the
prediction flips or `max_neurons` are gone:

  J(m) = l(Fbar_m(x), y) - mean_b l(Fbar_m(x_b), y_b)

over a random training batch b, where Fbar averages the softmax outputs over
`noise_copies` Gaussian-noised copies of each input (so the search cannot use
adversarial directions), and remove the neuron whose removal increases J most
to first order: the largest -dJ/dm_j, the gradient with respect to the
channel's mask entry (the paper's gradient of the same objective, taken at
the neuron's activation, P3 eq. in 6.1). Many examples are searched at once:
the step is vmapped over examples, each with its own mask.

Recorded per example: the count, whether it flipped, the stages the removed
neurons sit in, and training accuracy on a fixed subset after removal; per
replica, the mean counts of clean and noisy examples and the AUC of
(-count) as a detector of mislabelled examples (P3: 15.7 vs 5.1, AUC 0.89).
"""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np

from memjax.data.pipeline import normalize
from memjax.analysis.settings import AnalysisSettings, Context, setting
from memjax.models import StagedModel
from memjax.report import p3_plots
from memjax.report.tables import write_csv
from memjax.run import Run


NAME = 'neurons'


@dataclasses.dataclass(frozen=True)
class Settings(AnalysisSettings):
    """`analysis.neurons`: the critical-neuron search of P3 section 6.1."""

    num_clean: int = setting(32, 'clean training examples searched per replica (P3: 1000)')
    num_noisy: int = setting(32, 'noisy training examples searched per replica (P3: 1000)')
    max_neurons: int = setting(30, 'cap on neurons removed per example')
    noise_std: float = setting(0.1, 'std of the averaged classifier\'s input noise (normalised units)')
    noise_copies: int = setting(5, 'noisy copies in the averaged classifier')
    reference_batch: int = setting(32, 'random training examples in the objective\'s mean loss')
    accuracy_examples: int = setting(256, 'training subset for the accuracy after removal')
    parallel: int = setting(64, 'examples searched at once (vmap)')
    seed: int = setting(0, 'seed of the example choice and input noise')

    def validate(self) -> None:
        self.positive('max_neurons', 'noise_copies', 'reference_batch', 'accuracy_examples', 'parallel')


def full_masks(model: StagedModel, variables: dict, example_shape: tuple) -> dict:
    """{stage: ones [C]} for every stage but the last."""
    run = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((1, *example_shape)), capture=True), variables)
    return {name: jnp.ones(run.features[name].shape[-1], jnp.float32) for name in model.stage_names[:-1]}


def _averaged_log_probs(model, variables, x, masks, key, copies, std):
    """log of Fbar: softmax averaged over noisy copies. x: [B, ...] -> [B, K]."""
    noise = std * jax.random.normal(key, (copies, *x.shape), x.dtype)
    logits = model.apply(variables, (x[None] + noise).reshape((-1, *x.shape[1:])), masks=masks).output
    probs = jax.nn.softmax(logits.astype(jnp.float32)).reshape((copies, x.shape[0], -1)).mean(0)
    return jnp.log(probs + 1e-12)


def _search_step(model, variables, settings: Settings, masks, done, count, x, y, ref_x, ref_y, key):
    """One removal for one example (vmapped over examples by the caller)."""
    def objective(m):
        own = _averaged_log_probs(model, variables, x[None], m, key, settings.noise_copies, settings.noise_std)
        ref = _averaged_log_probs(model, variables, ref_x, m, jax.random.fold_in(key, 1), settings.noise_copies,
                                  settings.noise_std)
        ce = lambda lp, t: -jnp.take_along_axis(lp, t[:, None], axis=1).mean()
        return ce(own, y[None]) - ce(ref, ref_y)

    grads = jax.grad(objective)(masks)
    names = list(masks)
    scores = jnp.concatenate([jnp.where(masks[n] > 0, -grads[n], -jnp.inf) for n in names])
    best = jnp.argmax(scores)
    flat = jnp.concatenate([masks[n] for n in names])
    flat = jnp.where(done, flat, flat.at[best].set(0.0))
    sizes = np.cumsum([0] + [masks[n].shape[0] for n in names])
    new_masks = {n: flat[sizes[i]:sizes[i + 1]] for i, n in enumerate(names)}
    count = jnp.where(done, count, count + 1)
    prediction = jnp.argmax(model.apply(variables, x[None], masks=new_masks).output[0])
    return new_masks, done | (prediction != y), count


def critical_neuron_search(model: StagedModel, variables: dict, x: jax.Array, y: jax.Array, ref_x: jax.Array,
                           ref_y: jax.Array, settings: Settings, key: jax.Array) -> dict:
    """Greedy removal for every example of x: [E, ...] (normalised) with labels y: [E].

    ref_x: [M, ...], ref_y: [M] a pool the reference batches are drawn from.
    Returns {'count' [E], 'flipped' [E], 'initially_correct' [E], 'masks' {stage: [E, C]}}.
    """
    start = full_masks(model, variables, x.shape[1:])
    predictions = jnp.argmax(model.apply(variables, x).output, -1)
    initially_correct = np.asarray(predictions == y)
    step = jax.jit(jax.vmap(lambda v, m, d, c, xi, yi, rx, ry, k: _search_step(model, v, settings, m, d, c,
                                                                              xi, yi, rx, ry, k),
                            in_axes=(None, 0, 0, 0, 0, 0, 0, 0, 0)))
    out = {'count': [], 'flipped': [], 'masks': []}
    for lo in range(0, x.shape[0], settings.parallel):
        xs, ys = x[lo:lo + settings.parallel], y[lo:lo + settings.parallel]
        e = xs.shape[0]
        masks = jax.tree_util.tree_map(lambda v: jnp.broadcast_to(v, (e, *v.shape)), start)
        done = jnp.asarray(~initially_correct[lo:lo + e])
        count = jnp.zeros(e, jnp.int32)
        for iteration in range(settings.max_neurons):
            if bool(jnp.all(done)):
                break
            keys = jax.random.split(jax.random.fold_in(key, lo * 100_003 + iteration), e + 1)
            pick = jax.random.randint(keys[0], (e, settings.reference_batch), 0, ref_x.shape[0])
            masks, done, count = step(variables, masks, done, count, xs, ys, ref_x[pick], ref_y[pick], keys[1:])
        out['count'].append(np.asarray(count))
        out['flipped'].append(np.asarray(done) & initially_correct[lo:lo + e])
        out['masks'].append(jax.tree_util.tree_map(np.asarray, masks))
    masks = jax.tree_util.tree_map(lambda *xs: np.concatenate(xs), *out['masks'])
    return {'count': np.concatenate(out['count']), 'flipped': np.concatenate(out['flipped']),
            'initially_correct': initially_correct, 'masks': masks}


def accuracy_after_removal(model: StagedModel, variables: dict, masks: dict, x: jax.Array, y: jax.Array,
                           parallel: int = 64) -> np.ndarray:
    """Accuracy on (x [M, ...], y [M]) of the model with each example's masks {stage: [E, C]}: [E]."""
    acc = jax.jit(jax.vmap(lambda v, m, x, y: jnp.mean(jnp.argmax(model.apply(v, x, masks=m).output, -1) == y),
                           in_axes=(None, 0, None, None)))
    count = next(iter(masks.values())).shape[0]
    return np.concatenate([np.asarray(acc(variables, jax.tree_util.tree_map(lambda v: jnp.asarray(v[i:i + parallel]),
                                                                            masks), x, y))
                           for i in range(0, count, parallel)])


def detection_auc(clean_counts: np.ndarray, noisy_counts: np.ndarray) -> float:
    """AUC of -count separating noisy (positive) from clean examples (ties count one half)."""
    if clean_counts.size == 0 or noisy_counts.size == 0:
        return float('nan')
    diff = clean_counts[None, :].astype(float) - noisy_counts[:, None].astype(float)
    return float(np.mean((diff > 0) + 0.5 * (diff == 0)))


def run(run: Run, s: Settings, context: Context) -> None:
    """The search on `num_clean` clean and `num_noisy` noisy training examples of every noisy replica."""
    log = context.log
    model, data = run.model, run.dataset
    noisy_replicas = run.noisy_replicas('neurons')
    final_epoch = run.final_epoch()
    rng = np.random.default_rng(s.seed)
    images = jnp.asarray(normalize(data.train_images, data.mean, data.std))
    stages = model.stage_names[:-1]
    rows, summary = [], []
    log(f'neurons: {s.num_clean} clean + {s.num_noisy} noisy examples x {len(noisy_replicas)} replicas, '
        f'at most {s.max_neurons} neurons each')
    for rep in noisy_replicas:
        variables = run.replica_variables(final_epoch, rep.index)
        labels, mask = run.noise['labels'][rep.index], run.noise['noise_mask'][rep.index]
        chosen = {'clean': rng.permutation(np.flatnonzero(~mask))[:s.num_clean],
                  'noisy': rng.permutation(np.flatnonzero(mask))[:s.num_noisy]}
        index = np.concatenate([chosen['clean'], chosen['noisy']])
        kinds = ['clean'] * len(chosen['clean']) + ['noisy'] * len(chosen['noisy'])
        result = critical_neuron_search(model, variables, images[index], jnp.asarray(labels[index]), images,
                                        jnp.asarray(labels), s, jax.random.PRNGKey(s.seed + rep.index))
        subset = rng.permutation(labels.size)[:s.accuracy_examples]
        after = accuracy_after_removal(model, variables, result['masks'], images[subset], jnp.asarray(labels[subset]),
                                       s.parallel)
        for j, example in enumerate(index):
            if not result['initially_correct'][j]:
                continue
            flipped = bool(result['flipped'][j])
            rows.append({**run.row(rep.index), 'kind': kinds[j],
                         'example': int(example), 'neurons': int(result['count'][j]), 'flipped': flipped,
                         'accuracy_after': float(after[j]),
                         **{f'removed_{st}': int(np.sum(result['masks'][st][j] == 0)) for st in stages}})
        counts = {k: np.array([r['neurons'] if r['flipped'] else s.max_neurons + 1 for r in rows
                               if r['replica'] == rep.index and r['kind'] == k]) for k in ('clean', 'noisy')}
        auc = detection_auc(counts['clean'], counts['noisy'])
        summary.append({**run.row(rep.index),
                        'mean_neurons_clean': float(np.mean(counts['clean'])) if counts['clean'].size else None,
                        'mean_neurons_noisy': float(np.mean(counts['noisy'])) if counts['noisy'].size else None,
                        'auc_noisy_detection': auc})
        log(f"  r={rep.noise_ratio:g} seed {rep.seed}: clean {summary[-1]['mean_neurons_clean']}, "
            f"noisy {summary[-1]['mean_neurons_noisy']} neurons on average, AUC {auc:.3f}")
    out = context.output
    write_csv(os.path.join(out, 'neurons.csv'), rows,
              ('replica', 'noise_ratio', 'seed', 'kind', 'example', 'neurons', 'flipped', 'accuracy_after',
               *[f'removed_{st}' for st in stages]))
    write_csv(os.path.join(out, 'summary.csv'), summary,
              ('replica', 'noise_ratio', 'seed', 'mean_neurons_clean', 'mean_neurons_noisy', 'auc_noisy_detection'))
    p3_plots.neuron_counts(os.path.join(context.figures, 'neurons.png'), rows, stages, s.max_neurons)
    log('  neurons: results/neurons/neurons.csv, summary.csv, figures/neurons.png '
        '(examples not flipped within the cap count as cap + 1 in the means and the AUC)')
