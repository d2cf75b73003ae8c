"""Critical neurons (P3 section 6.1, Fig. 5): how many neurons flip one example's prediction.

A "neuron" is an output channel of any conv layer (with its BatchNorm; both
convs inside a residual block and the projection shortcut included) or a unit
of any linear layer but the classifier: every layer of the model
(`memjax.models.layer_index`) but the last. It is removed by zeroing its
activation (a 0 in the layer's channel mask, `StagedModel.apply(masks=...)`;
inside a residual branch the skip path is left intact). With
`classifier_weights` (default), each single weight of the classifier is a
candidate too, removed by zeroing it (P3: "in the case of linear layers, we
zero-out a single weight"; P3's ResNet-9 has no other linear layer, so
memjax's hidden linear layers, as in the CNN, keep per-unit neurons). ViTs are
refused: a block's output channel carries the skip path. For one example
(x, y), with y the label the model was trained on, repeat until the
prediction flips or `max_neurons` are gone:

  J(m) = l(Fbar_m(x), y) - mean_b l(Fbar_m(x_b), y_b)

over a random training batch b (redrawn every step; P3's code uses the rest
of one fixed batch), where Fbar averages the logits over `noise_copies`
Gaussian-noised copies of each input, as P3's code (so the search cannot use
adversarial directions). `noise`: 'relative' (default, P3's code): each
copy's noise has L2 norm `noise_scale` (1%) of that input's L2 norm (of the
normalised input the model receives); 'fixed': i.i.d. noise of std
`noise_std`. The neuron removed is the one whose removal increases J most to
first order, `score`:

- 'param_grad' (default, P3's code): -sum over the neuron's parameters of
  theta * dJ/dtheta, where the neuron's parameters are every parameter of its
  stage indexed by the stage's output channel (ConvBN: the conv kernel's
  output slice and BatchNorm scale and bias; Dense: the kernel column and the
  bias). Zeroing all of them zeroes the channel exactly, and this is the
  first-order change of J when they are zeroed. (For a ViT block, whose
  output includes its input, it sums the parameters with that output axis.)
- 'mask_grad': -dJ/dm_j, the gradient with respect to the channel's mask entry.

The prediction flip is checked through the same noise-averaged classifier
Fbar that ranks the neurons (P3's code, after its September 2023 fix, tests
argmax of the noise-averaged output), on fresh noise; an example enters the
search only if Fbar predicts its label before any removal. Many examples are
searched at once: the step is vmapped over examples, each with its own mask.

Recorded per example: the count, whether it flipped, whether the search hit
`max_neurons` without a flip (censored: its count is only known to be larger
than the cap), how many removed neurons sit in each unit (P3's layer groups
by default, `granularity`; P3 Fig. 5), and the accuracy of the plain model on
the rest of the training set (a fixed random subset, the searched examples
excluded) before and after the removal. Per replica: censored counts, mean counts of
the flipped (uncensored) examples, and the AUC of (-count) as a detector of
mislabelled examples with the censoring explicit (`censored_auc`). P3 reports
15.7 vs 5.1 neurons and AUC 0.89.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np

from memjax.analysis.localization.layer_groups import chosen_units, granularity_setting
from memjax.analysis.settings import AnalysisSettings, Context, setting
from memjax.data.pipeline import normalize
from memjax.models import StagedModel
from memjax.errors import ConfigError
from memjax.models.layer_index import get_subtree, set_subtree
from memjax.report import p3_plots
from memjax.report.tables import write_csv
from memjax.run import Run


NAME = 'neurons'
NOISE_MODES = ('relative', 'fixed')
SCORES = ('param_grad', 'mask_grad')


@dataclasses.dataclass(frozen=True)
class Settings(AnalysisSettings):
    """`analysis.neurons`: the critical-neuron search of P3 section 6.1."""

    num_clean: int = setting(32, 'clean training examples searched per replica (P3: 1000)')
    num_noisy: int = setting(32, 'noisy training examples searched per replica (P3: 1000)')
    max_neurons: int = setting(30, 'cap on neurons removed per example')
    noise: str = setting('relative', "input noise of the averaged classifier: relative (L2 norm noise_scale x the "
                         "input's, P3 code) or fixed (std noise_std)", choices=NOISE_MODES)
    noise_scale: float = setting(0.01, 'relative noise: noise L2 norm / input L2 norm (P3: 1%)')
    noise_std: float = setting(0.1, 'fixed noise: std in normalised units')
    score: str = setting('param_grad', 'param_grad: sum of parameter x gradient over the neuron\'s parameters (P3 '
                         'code); mask_grad: gradient at the neuron\'s activation mask', choices=SCORES)
    noise_copies: int = setting(5, 'noisy copies in the averaged classifier')
    reference_batch: int = setting(32, 'random training examples in the objective\'s mean loss')
    accuracy_examples: int = setting(256, 'training examples (not searched) for the accuracy before/after removal')
    granularity: str = granularity_setting()
    parallel: int = setting(64, 'examples searched at once (vmap)')
    seed: int = setting(0, 'seed of the example choice and input noise')
    classifier_weights: bool = setting(True, "the classifier's single weights are candidates too (P3: in a linear "
                                       'layer a single weight is zeroed)')

    def validate(self) -> None:
        self.positive('max_neurons', 'noise_copies', 'reference_batch', 'accuracy_examples', 'parallel')

    def check_model(self, model) -> None:
        if model.name in ('vit', 'vit_small'):
            raise ConfigError(f"analysis.neurons is not defined for {model.name}: a transformer block's output "
                              'channel carries the skip path, so zeroing it is not removing a neuron; drop '
                              "'neurons' from analyses")


WEIGHTS = '.weights'  # suffix of the mask over the classifier's single weights


def candidate_layers(model: StagedModel) -> tuple:
    """The layers whose output channels are candidate neurons: every layer but the classifier."""
    return model.layers[:-1]


def classifier_kernel_path(model: StagedModel, params: dict) -> tuple[str, ...]:
    """Path of the classifier's weight matrix [D, K] in params."""
    path = model.layers[-1].path
    return path + (('kernel',) if 'kernel' in get_subtree(params, path) else ('dense', 'kernel'))


def full_masks(model: StagedModel, params: dict, classifier_weights: bool) -> dict:
    """{layer: ones [C]} for every candidate layer, and with `classifier_weights`
    {classifier + WEIGHTS: ones [D * K]} over the classifier's single weights."""
    masks = {layer.name: jnp.ones(layer.channels, jnp.float32) for layer in candidate_layers(model)}
    if classifier_weights:
        masks[model.layers[-1].name + WEIGHTS] = jnp.ones(
            get_subtree(params, classifier_kernel_path(model, params)).size, jnp.float32)
    return masks


def masked_variables(model: StagedModel, variables: dict, masks: dict) -> tuple[dict, dict]:
    """(variables with the classifier's weight mask applied to its kernel, the activation masks)."""
    activations = {k: v for k, v in masks.items() if not k.endswith(WEIGHTS)}
    weights = [v for k, v in masks.items() if k.endswith(WEIGHTS)]
    if not weights:
        return variables, activations
    path = classifier_kernel_path(model, variables['params'])
    kernel = get_subtree(variables['params'], path)
    params = set_subtree(variables['params'], path, kernel * weights[0].reshape(kernel.shape).astype(kernel.dtype))
    return {**variables, 'params': params}, activations


def masked_logits(model: StagedModel, variables: dict, x: jax.Array, masks: dict | None) -> jax.Array:
    """Evaluation-mode logits [B, K] of x [B, ...] with neurons (and classifier weights) removed."""
    variables, activations = masked_variables(model, variables, masks or {})
    return model.apply(variables, x, masks=activations).output


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


def channel_scores(params: dict, grads: dict, channels: int) -> jax.Array:
    """[C]: sum of theta x gradient over a layer's parameters indexed by its output channel (last axis)."""
    total = jnp.zeros(channels, jnp.float32)
    for p, g in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(grads)):
        if p.ndim >= 1 and p.shape[-1] == channels:
            total = total + jnp.sum((p * g).reshape(-1, channels), axis=0)
    return total


def _search_step(model, variables, settings: Settings, masks, done, count, x, y, ref_x, ref_y, key):
    """One removal for one example (vmapped over examples by the caller)."""
    def objective(params, m):
        v = {**variables, 'params': params}
        own = _averaged_log_probs(model, v, x[None], m, key, settings)
        ref = _averaged_log_probs(model, v, ref_x, m, jax.random.fold_in(key, 1), settings)
        ce = lambda lp, t: -jnp.take_along_axis(lp, t[:, None], axis=1).mean()
        return ce(own, y[None]) - ce(ref, ref_y)

    names = list(masks)
    if settings.score == 'mask_grad':
        grads = jax.grad(objective, argnums=1)(variables['params'], masks)
        raw = {n: -grads[n] for n in names}
    else:
        grads = jax.grad(objective)(variables['params'], masks)
        paths = {layer.name: layer.path for layer in candidate_layers(model)}
        raw = {n: -channel_scores(get_subtree(variables['params'], paths[n]), get_subtree(grads, paths[n]),
                                  masks[n].shape[0]) for n in names if not n.endswith(WEIGHTS)}
        for n in names:
            if n.endswith(WEIGHTS):  # a single weight: theta x gradient of that weight
                path = classifier_kernel_path(model, variables['params'])
                raw[n] = -(get_subtree(variables['params'], path) * get_subtree(grads, path)).ravel()
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


def critical_neuron_search(model: StagedModel, variables: dict, x: jax.Array, y: jax.Array, ref_x: jax.Array,
                           ref_y: jax.Array, settings: Settings, key: jax.Array) -> dict:
    """Greedy removal for every example of x: [E, ...] (normalised) with labels y: [E].

    ref_x: [M, ...], ref_y: [M] a pool the reference batches are drawn from.
    Returns {'count' [E], 'flipped' [E], 'initially_correct' [E] (by the noise-averaged classifier),
    'masks' {layer: [E, C]}}.
    """
    start = full_masks(model, variables['params'], settings.classifier_weights)
    averaged = jax.jit(lambda v, x, k: _averaged_log_probs(model, v, x, None, k, settings))
    predictions = jnp.concatenate([jnp.argmax(averaged(variables, x[lo:lo + settings.parallel],
                                                       jax.random.fold_in(key, 2_000_003 + lo)), -1)
                                   for lo in range(0, x.shape[0], settings.parallel)])
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
    """Accuracy on (x [M, ...], y [M]) of the model with each example's masks {layer: [E, C]}: [E]."""
    acc = jax.jit(jax.vmap(lambda v, m, x, y: jnp.mean(jnp.argmax(masked_logits(model, v, x, m), -1) == y),
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


def censored_auc(clean_counts, clean_censored, noisy_counts, noisy_censored) -> dict:
    """AUC of -count as a detector of noisy examples, with censored searches explicit.

    A censored count (the search hit the cap without a flip) is only known to
    exceed the cap. For a (noisy, clean) pair: both uncensored: compared
    (a tie counts one half); exactly one censored: the censored one has more
    neurons (decided); both censored: undetermined. Returns
    auc (undetermined pairs count one half: the same as ranking every censored
    example above every uncensored one, ties among them), auc_low / auc_high
    (undetermined pairs all wrong / all right: the bounds any true counts
    would respect), auc_determined (over decided pairs only, Harrell's
    C-index) and undetermined (the fraction of pairs undetermined).
    """
    clean_counts, noisy_counts = np.asarray(clean_counts, float), np.asarray(noisy_counts, float)
    clean_censored, noisy_censored = np.asarray(clean_censored, bool), np.asarray(noisy_censored, bool)
    if clean_counts.size == 0 or noisy_counts.size == 0:
        nan = float('nan')
        return {'auc': nan, 'auc_low': nan, 'auc_high': nan, 'auc_determined': nan, 'undetermined': nan}
    c, n = np.where(clean_censored, np.inf, clean_counts)[None, :], np.where(noisy_censored, np.inf, noisy_counts)[:, None]
    both = noisy_censored[:, None] & clean_censored[None, :]
    right = (~both & (n < c)).astype(float) + 0.5 * (~both & (n == c))
    pairs, undecided = both.size, float(both.sum())
    decided = pairs - undecided
    return {'auc': float((right.sum() + 0.5 * undecided) / pairs), 'auc_low': float(right.sum() / pairs),
            'auc_high': float((right.sum() + undecided) / pairs),
            'auc_determined': float(right.sum() / decided) if decided else float('nan'),
            'undetermined': undecided / pairs}


def run(run: Run, s: Settings, context: Context) -> None:
    """The search on `num_clean` clean and `num_noisy` noisy training examples of every noisy replica."""
    log = context.log
    model, data = run.model, run.dataset
    noisy_replicas = run.noisy_replicas('neurons')
    final_epoch = run.final_epoch()
    rng = np.random.default_rng(s.seed)
    images = jnp.asarray(normalize(data.train_images, data.mean, data.std))
    candidates = {layer.name for layer in candidate_layers(model)} | (
        {model.layers[-1].name} if s.classifier_weights else set())
    units = [u for u in chosen_units(model, s.granularity) if set(u.layers) & candidates]
    stages = [u.name for u in units]
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
        rest = np.setdiff1d(np.arange(labels.size), index)
        subset = rng.permutation(rest)[:s.accuracy_examples]
        after = accuracy_after_removal(model, variables, result['masks'], images[subset], jnp.asarray(labels[subset]),
                                       s.parallel)
        before = float(np.mean(np.asarray(jnp.argmax(model.apply(variables, images[subset]).output, -1))
                               == labels[subset]))
        removed = {u.name: sum(np.sum(result['masks'][name] == 0, axis=1) for layer in u.layers
                               for name in (layer, layer + WEIGHTS) if name in result['masks']) for u in units}
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
        row = {**run.row(rep.index), 'cap': s.max_neurons, 'score': s.score}
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
              ('replica', 'noise_ratio', 'seed', 'score', 'cap', 'searched_clean', 'censored_clean', 'mean_neurons_clean',
               'restricted_mean_neurons_clean', 'mean_accuracy_drop_clean', 'searched_noisy', 'censored_noisy',
               'mean_neurons_noisy', 'restricted_mean_neurons_noisy', 'mean_accuracy_drop_noisy', 'auc_noisy_detection',
               'auc_low_noisy_detection', 'auc_high_noisy_detection', 'auc_determined_noisy_detection',
               'undetermined_pairs'))
    p3_plots.neuron_counts(os.path.join(context.figures, 'neurons.png'), rows, stages, s.max_neurons)
    log('  neurons: results/neurons/neurons.csv, summary.csv, figures/neurons.png (means over flipped examples; '
        'searches that hit the cap are censored, counted separately, and enter the AUC as described in '
        'censored_auc)')
