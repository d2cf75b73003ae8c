"""P4's dissection engine on tiny models: KL/Dist against NumPy, activation
maximisation, the DCGAN, input gradients against finite differences, GAN resume."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memjax.analysis.dissection import activation_maximization as am
from memjax.train.pixel_classifier import ModelGroup, pixel_classifier, stack_variables
from memjax.analysis.dissection.kl_distance import dissimilarity_matrix, kl_divergence
from memjax.analysis.dissection.generator_training import GeneratorSettings, load_generator, train_generator
from memjax.train.input_gradients import (DEFINITIONS, Definition, InputGradientMeter, input_classifier,
                                          input_gradient_magnitude, loss_gradient, to_input_space)
from memjax.data.pipeline import normalize
from memjax.engine.runner import runner_for
from memjax.errors import ConfigError, RunDirectoryError
from memjax.models import build_model
from memjax.models.dcgan import dcgan

SHAPE = (8, 8, 1)
MEAN, STD = np.array([0.4], np.float32), np.array([0.25], np.float32)
LATENT = 8


def key(seed: int) -> jax.Array:
    """RBG keys: XLA compiles their initialisers in a fraction of threefry's time on CPU."""
    return jax.random.key(seed, impl='rbg')


@functools.lru_cache(maxsize=None)
def initializer(model):
    return jax.jit(model.init, static_argnums=1)


def group(width: int, replicas: int, seed: int = 0, classes: int = 3) -> ModelGroup:
    model = build_model('cnn', classes, width=width)
    variables = [initializer(model)(key(seed + r), SHAPE) for r in range(replicas)]
    # Non-trivial running statistics, as a trained model has (evaluation mode uses them).
    for r, v in enumerate(variables):
        v['batch_stats'] = {stage: {'bn': {'mean': bn['bn']['mean'] - 0.1 * (r + 1),
                                           'var': bn['bn']['var'] * (1 + 0.2 * r)}}
                            for stage, bn in v['batch_stats'].items()}
    return ModelGroup(pixel_classifier(model, MEAN, STD), stack_variables(variables), f'cnn{width}')


def np_log_softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def np_kl(p, q):
    lp, lq = np_log_softmax(np.float64(p)), np_log_softmax(np.float64(q))
    return (np.exp(lp) * (lp - lq)).sum(axis=-1)


def one(g: ModelGroup, r: int):
    return jax.tree_util.tree_map(lambda x: x[r], g.variables)


def test_kl_matches_numpy_and_is_stable():
    rng = np.random.default_rng(0)
    p, q = rng.normal(size=(5, 7)) * 3, rng.normal(size=(5, 7)) * 3
    np.testing.assert_allclose(kl_divergence(jnp.asarray(p), jnp.asarray(q)), np_kl(p, q), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(kl_divergence(jnp.asarray(p), jnp.asarray(p)), 0.0, atol=1e-6)
    big = jnp.array([[1000.0, 0.0, -1000.0]])
    assert np.isfinite(float(kl_divergence(big, -big)[0]))


def test_pixel_classifier_equals_the_training_normalisation():
    g = group(2, 1)
    model = build_model('cnn', 3, width=2)
    x = np.random.default_rng(1).integers(0, 256, (4, *SHAPE), dtype=np.uint8)
    ours = jax.jit(g.classifier)(one(g, 0), jnp.asarray(x / 255.0, jnp.float32))
    pipeline = jax.jit(lambda v, x: model.logits(v, normalize(x, MEAN, STD)))(one(g, 0), jnp.asarray(x))
    assert np.all(np.asarray(ours) != 0)
    np.testing.assert_allclose(ours, pipeline, rtol=1e-5, atol=1e-6)


def test_dissimilarity_matches_numpy_across_architectures():
    a, b = group(2, 2, seed=0), group(3, 3, seed=10)
    rng = np.random.default_rng(2)
    c, s = 3, 5
    images = [rng.uniform(size=(g.num_replicas, c, s, *SHAPE)).astype(np.float32) for g in (a, b)]
    result = dissimilarity_matrix([a, tuple(b[:2])], images, seed_chunk=2)     # chunks of 2 seeds, last one padded
    assert result.mean.shape == result.std.shape == (5, 5) and result.per_seed.shape == (5, 5, s)
    models = [(a, r) for r in range(2)] + [(b, r) for r in range(3)]
    owner_images = [images[0][r] for r in range(2)] + [images[1][r] for r in range(3)]
    expected = np.zeros((5, 5, s))
    apply = {id(g): jax.jit(g.classifier) for g in (a, b)}
    for i, (ga, ra) in enumerate(models):
        x = jnp.asarray(owner_images[i].reshape(c * s, *SHAPE))
        p = np.asarray(apply[id(ga)](one(ga, ra), x)).reshape(c, s, -1)
        for k, (gb, rb) in enumerate(models):
            q = np.asarray(apply[id(gb)](one(gb, rb), x)).reshape(c, s, -1)
            expected[i, k] = np_kl(p, q).mean(axis=0)                 # (1/C) sum_j KL, per seed
    np.testing.assert_allclose(result.per_seed, expected, rtol=2e-4, atol=1e-6)
    np.testing.assert_allclose(result.mean, expected.mean(axis=2), rtol=2e-4, atol=1e-6)
    np.testing.assert_allclose(result.std, expected.std(axis=2), rtol=2e-3, atol=1e-6)
    np.testing.assert_allclose(np.diag(result.mean), 0.0, atol=1e-6)
    assert not np.allclose(result.mean, result.mean.T)                # asymmetric


@pytest.mark.parametrize('shape', [(32, 32, 3), (28, 28, 1)])
def test_generator_output_shape_and_range(shape):
    generator, discriminator = dcgan(shape, width=8)
    last = f'deconv{3 if shape[0] == 32 else 2}'

    @jax.jit  # one compilation for everything
    def run(key, z):
        variables = generator.init(key, z)
        evaluation = generator.apply(variables, z)
        training = generator.apply(variables, z, train=True, mutable=['batch_stats'])[0]
        loud = {**variables, 'params': {**variables['params']}}
        loud['params'][last] = {**loud['params'][last], 'kernel': loud['params'][last]['kernel'] * 1e4}
        saturated = generator.apply(loud, z)
        logits = discriminator.apply(discriminator.init(key, evaluation), evaluation)
        return evaluation, training, saturated, logits, variables['params']['deconv1']['kernel'].std()

    evaluation, training, saturated, logits, kernel_std = run(key(1),
                                                              jax.random.normal(jax.random.PRNGKey(0), (3, 100)))
    for x in (evaluation, training, saturated):
        assert x.shape == (3, *shape) and float(x.min()) >= -1.0 and float(x.max()) <= 1.0
    assert float(jnp.abs(saturated).max()) > 0.999                   # tanh saturates, stays in range
    assert logits.shape == (3,)
    assert abs(float(kernel_std) - 0.02) < 0.005                       # N(0, 0.02) init


def _tiny_generator():
    """A DCGAN generator for 8x8x1 whose running BatchNorm statistics are those of a
    batch of latents (as after training) and whose output varies visibly with z."""
    generator, _ = dcgan(SHAPE, width=4)
    variables = jax.jit(generator.init)(key(3), jnp.zeros((1, LATENT)))
    z = jax.random.normal(jax.random.PRNGKey(4), (64, LATENT))

    @jax.jit
    def calibrate(v):
        def body(_, stats):
            return generator.apply({'params': v['params'], 'batch_stats': stats}, z, train=True,
                                   mutable=['batch_stats'])[1]['batch_stats']
        return {'params': v['params'], 'batch_stats': jax.lax.fori_loop(0, 60, body, v['batch_stats'])}

    variables = calibrate(variables)
    variables['params']['deconv3']['kernel'] = variables['params']['deconv3']['kernel'] * 20
    return generator, variables


def test_ascent_increases_the_class_output_and_batch_equals_one_at_a_time():
    g = group(2, 2)
    generator, g_vars = _tiny_generator()
    seeds = (5, 6, 7)
    kwargs = dict(iterations=15, learning_rate=0.05, latent_dim=LATENT)
    result = am.maximize_activations(g.classifier, g.variables, generator, g_vars, num_classes=3,
                                     seeds=seeds, seed_chunk=2, lifting='vmap', **kwargs)
    assert result.z.shape == (2, 3, 3, LATENT) and result.images.shape == (2, 3, 3, *SHAPE)
    assert result.images.min() >= 0.0 and result.images.max() <= 1.0
    assert np.all(result.final > result.initial + 1e-6)
    single = am.make_single_ascent(g.classifier, generator, **{k: v for k, v in kwargs.items() if k != 'latent_dim'})
    z0 = am.latents_from_seeds(seeds, LATENT)
    r, j, s = 1, 2, 2
    z, initial, final = single(one(g, r), g_vars, z0[s], j)
    np.testing.assert_allclose(z, result.z[r, j, s], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(final, result.final[r, j, s], rtol=1e-4, atol=1e-5)
    pixels = jax.jit(lambda v, z: am.generator_pixels(generator, v, z))(g_vars, jnp.asarray(result.z[r, j, s])[None])
    np.testing.assert_allclose(pixels[0], result.images[r, j, s], rtol=1e-5, atol=1e-6)
    mapped = am.maximize_activations(g.classifier, g.variables, generator, g_vars, num_classes=3, seeds=seeds,
                                     lifting='map', **kwargs)               # lax.map, no chunks
    np.testing.assert_allclose(mapped.z, result.z, rtol=1e-4, atol=1e-5)
    with pytest.raises(ConfigError):
        am.maximize_activations(g.classifier, g.variables, generator, g_vars, num_classes=3, seeds=seeds,
                                objective='entropy', **kwargs)


def test_probability_objective_increases_the_probability():
    g = group(2, 1)
    generator, g_vars = _tiny_generator()
    result = am.maximize_activations(g.classifier, g.variables, generator, g_vars, num_classes=3, seeds=(1,),
                                     iterations=10, learning_rate=0.5, objective='probability', latent_dim=LATENT,
                                     lifting='loop')
    assert np.all((result.initial > 0) & (result.initial < 1)) and np.all(result.final > result.initial)


def test_input_gradient_magnitude_matches_finite_differences():
    d, k = int(np.prod(SHAPE)), 3

    def classifier(v, pixels):  # smooth, through the same normalisation
        x = ((pixels - MEAN) / STD).reshape(pixels.shape[0], -1)
        return jnp.tanh(x @ v['w1']) @ v['w2']

    rng = np.random.default_rng(4)
    variables = {'w1': jnp.asarray(rng.normal(size=(2, d, 6)) / 4, jnp.float32),
                 'w2': jnp.asarray(rng.normal(size=(2, 6, k)), jnp.float32)}
    images = rng.integers(0, 256, (5, *SHAPE), dtype=np.uint8)
    labels = rng.integers(0, k, (2, 5))
    result = input_gradient_magnitude(classifier, variables, images, labels, batch_size=2)
    assert result.per_example.shape == (2, 5) and result.mean.shape == (2,)
    eps = 1e-2
    for r in range(2):
        v = jax.tree_util.tree_map(lambda x: np.float64(x[r]), variables)
        for i in range(5):
            def loss(p):
                x = ((p - MEAN) / STD).reshape(1, -1)
                logits = np.tanh(x @ v['w1']) @ v['w2']
                return -np_log_softmax(logits)[0, labels[r, i]]
            p = images[i].astype(np.float64)[None] / 255.0
            grads = np.zeros(d)
            for j in range(d):
                step = np.zeros(d)
                step[j] = eps
                step = step.reshape(p.shape)
                grads[j] = (loss(p + step) - loss(p - step)) / (2 * eps)
            np.testing.assert_allclose(result.per_example[r, i], np.abs(grads).sum(), rtol=1e-3)
    np.testing.assert_allclose(result.mean, result.per_example.mean(axis=1), rtol=1e-6)
    shared = input_gradient_magnitude(classifier, variables, images, labels[0])
    np.testing.assert_allclose(shared.per_example[0], result.per_example[0], rtol=1e-5)


def test_input_gradient_definitions_differ_by_the_channel_std_and_by_the_mode():
    """P4's G is w.r.t. the normalised input: per channel, dL/dpixel = dL/dnormalised / std, so the two
    definitions differ by the normalisation (a G taken in the wrong space fails); training mode differs
    from evaluation mode, and its last, smaller batch is its own BatchNorm batch (not padded)."""
    shape, mean, std = (8, 8, 3), np.array([0.5, 0.4, 0.3], np.float32), np.array([0.1, 0.25, 0.8], np.float32)
    model = build_model('cnn', 3, width=4)
    variables = initializer(model)(key(7), shape)
    variables['batch_stats'] = jax.tree_util.tree_map(lambda x: x + 0.3, variables['batch_stats'])
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (10, *shape), dtype=np.uint8)
    labels = jnp.asarray(rng.integers(0, 3, 10), jnp.int32)
    # P4's mode (training); the chain rule is the same in evaluation mode.
    pixels_def, normalised_def = Definition('p', 'pixels', True, ''), Definition('z', 'normalised', True, '')
    g_pixels = jax.jit(functools.partial(loss_gradient, input_classifier(model, mean, std, pixels_def)))(
        variables, jnp.asarray(to_input_space(images, mean, std, 'pixels')), labels)
    g_normalised = jax.jit(functools.partial(loss_gradient, input_classifier(model, mean, std, normalised_def)))(
        variables, jnp.asarray(to_input_space(images, mean, std, 'normalised')), labels)
    np.testing.assert_allclose(g_pixels, g_normalised / std, rtol=2e-3, atol=1e-6)
    per_channel = np.abs(np.asarray(g_normalised)).sum(axis=(0, 1, 2))
    assert abs(np.abs(np.asarray(g_pixels)).sum() - (per_channel / std).sum()) < 2e-3 * (per_channel / std).sum()
    assert not np.isclose(np.abs(np.asarray(g_pixels)).sum(), per_channel.sum(), rtol=0.1)
    stacked = stack_variables([variables, variables])
    both = jnp.stack([labels, labels])
    runner = runner_for(model, mean, std)
    p4 = InputGradientMeter(runner, images, both, 'train_normalised', batch_size=4)(stacked)
    evaluation = InputGradientMeter(runner, images, both, 'eval_pixels')(stacked)
    train_def = DEFINITIONS['train_normalised']
    assert train_def.train and train_def.space == 'normalised' and not DEFINITIONS['eval_pixels'].train
    z = jnp.asarray(to_input_space(images, mean, std, 'normalised'))
    gradient = jax.jit(functools.partial(loss_gradient, input_classifier(model, mean, std, train_def)))
    expected = np.concatenate([np.abs(np.asarray(gradient(variables, z[i:i + 4], labels[i:i + 4])))
                               .reshape(len(z[i:i + 4]), -1).sum(axis=1) for i in (0, 4, 8)]).mean()
    np.testing.assert_allclose(p4, [expected, expected], rtol=1e-4)
    assert not np.isclose(p4[0], evaluation[0], rtol=0.05)


def test_gan_training_resumes_to_the_uninterrupted_result(tmp_path):
    images = np.random.default_rng(5).integers(0, 256, (40, *SHAPE), dtype=np.uint8)
    settings = GeneratorSettings(epochs=2, batch_size=16, width=4, latent_dim=LATENT, seed=1)
    quiet = dict(log=lambda line: None, async_save=False)
    full = train_generator(images, str(tmp_path / 'full'), settings, **quiet)
    train_generator(images, str(tmp_path / 'resumed'), dataclasses.replace(settings, epochs=1), **quiet)
    resumed = train_generator(images, str(tmp_path / 'resumed'), settings, **quiet)
    jax.tree_util.tree_map(np.testing.assert_array_equal, full, resumed)
    generator, loaded = load_generator(str(tmp_path / 'resumed'))
    jax.tree_util.tree_map(np.testing.assert_array_equal, full, loaded)
    x = generator.apply(loaded, jnp.ones((2, LATENT)))
    assert x.shape == (2, *SHAPE)
    with pytest.raises(RunDirectoryError, match='no trained generator'):
        load_generator(str(tmp_path / 'missing'))
    with pytest.raises(ConfigError, match='other settings'):
        train_generator(images, str(tmp_path / 'full'), dataclasses.replace(settings, seed=2), **quiet)
