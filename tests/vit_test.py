"""P3's ViT (`vit_small`): parameter count, SPT, LSA, dropout, stages/units, against the authors' code."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy.special import erf

from memjax.data.pipeline import dropout_key, normalize
from memjax.models import build_model
from memjax.models.vit import LocalitySelfAttention, attention_weights, patchify, shifted_copies, vit_small
from memjax.engine.runner import runner_for
from memjax.train.state import OptimizerSpec
from memjax.train.trainable import ClassifierTrainable

TINY = {'width': 16, 'depth': 2, 'heads': 2}


def tiny(num_classes=5, **kw):
    return build_model('vit_small', num_classes, **{**TINY, **kw})


def init(model, shape, seed=0):
    """Variables of `model` for inputs of one example's `shape` (one compiled call)."""
    return jax.jit(lambda k: model.init(k, shape))(jax.random.PRNGKey(seed))


def _count(tree):
    return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))


def test_the_authors_config_has_their_parameter_count():
    # models.py get_vit: ViT(image_size=32, patch_size=2, num_classes=10, dim=512, depth=6, heads=8,
    # mlp_dim=512), dim_head=64, channels=3, counted from models/vit_small.py:
    patch_dim = 2 * 2 * 5 * 3                                    # SPT: image + 4 shifted copies
    spt = 2 * patch_dim + (patch_dim * 512 + 512)                 # LayerNorm(60) + Linear(60, 512)
    pos, cls = (16 * 16 + 1) * 512, 512                           # pos_embedding [1, 257, 512], cls_token
    inner = 8 * 64
    lsa = 2 * 512 + 1 + 512 * 3 * inner + (inner * 512 + 512)     # PreNorm LN, temperature, to_qkv (no bias), to_out
    ff = 2 * 512 + (512 * 512 + 512) + (512 * 512 + 512)          # PreNorm LN, Linear(512, 512) x 2
    head = 2 * 512 + (512 * 10 + 10)                              # mlp_head: LayerNorm, Linear
    expected = spt + pos + cls + 6 * (lsa + ff) + head
    assert expected == 9_628_296

    model = build_model('vit_small', 10)
    shapes = jax.eval_shape(lambda k: model.init(k, (32, 32, 3)), jax.random.PRNGKey(0))
    counts = {name: _count(tree) for name, tree in shapes['params'].items()}
    assert counts['embed'] == spt + pos + cls and counts['head'] == head
    assert all(counts[f'block{i}'] == lsa + ff for i in range(1, 7))
    assert sum(counts.values()) == expected


def test_stages_and_units_are_p3s_layer_groups():
    model = build_model('vit_small', 10)
    names = ['embed'] + [f'block{i}' for i in range(1, 7)] + ['head']
    assert list(model.stage_names) == names
    assert [u.name for u in model.units('p3_groups')] == names
    assert [u.name for u in model.units('layer')] == names
    assert build_model('vit', 10).name == 'vit' and len(build_model('vit', 10).stage_names) == 14
    # P3's group 0 has no pos_embedding/cls_token; here they belong to embed. block1 owns its own first LayerNorm.
    variables = init(tiny(), (32, 32, 3), 0)
    assert set(variables['params']['embed']) == {'norm', 'proj', 'cls', 'pos'}
    assert set(variables['params']['block1']) == {'attn_norm', 'attn', 'mlp_norm', 'mlp'}
    assert variables['batch_stats'] == {}


def test_initialisation_is_the_authors():
    variables = init(build_model('vit_small', 10, 64, depth=1, heads=2), (32, 32, 3), 0)
    p = variables['params']
    np.testing.assert_allclose(p['block1']['attn']['temperature'], np.log(64 ** -0.5), rtol=1e-6)
    assert abs(float(p['embed']['pos'].std()) - 1.0) < 0.05        # torch.randn
    bound = 1 / np.sqrt(64)                                         # nn.Linear: U(+-1/sqrt(fan_in))
    for leaf in (p['block1']['mlp']['fc1']['kernel'], p['block1']['mlp']['fc1']['bias']):
        assert np.abs(leaf).max() <= bound and np.abs(leaf).max() > 0.9 * bound


@pytest.mark.parametrize('shape,patch,tokens', [((32, 32, 3), 2, 256), ((28, 28, 1), 2, 196), ((30, 30, 1), 4, 64)])
def test_spt_shapes(shape, patch, tokens):
    model = tiny(patch=patch)
    variables = init(model, shape)
    patch_dim = 5 * shape[2] * patch * patch
    assert variables['params']['embed']['norm']['scale'].shape == (patch_dim,)
    assert variables['params']['embed']['proj']['kernel'].shape == (patch_dim, 16)
    assert variables['params']['embed']['pos'].shape == (1, tokens + 1, 16)
    out = model.apply(variables, jnp.ones((2, *shape)), stop='block1').output
    assert out.shape == (2, tokens + 1, 16)


def test_shifted_copies_and_patch_order_are_the_authors():
    x = np.arange(2 * 4 * 4 * 3, dtype=np.float32).reshape(2, 4, 4, 3) + 1   # [B, H, W, C]
    s = np.asarray(shifted_copies(jnp.asarray(x)))
    assert s.shape == (2, 4, 4, 15)
    np.testing.assert_array_equal(s[..., 0:3], x)
    right, left, down, up = (s[..., 3 * k:3 * k + 3] for k in range(1, 5))
    # F.pad(x, (1, -1, 0, 0)): out[w] = x[w - 1]; (-1, 1, 0, 0): out[w] = x[w + 1]; same on H for (0, 0, +-1, -+1).
    np.testing.assert_array_equal(right[:, :, 1:], x[:, :, :-1]) ; assert not right[:, :, 0].any()
    np.testing.assert_array_equal(left[:, :, :-1], x[:, :, 1:]) ; assert not left[:, :, -1].any()
    np.testing.assert_array_equal(down[:, 1:], x[:, :-1]) ; assert not down[:, 0].any()
    np.testing.assert_array_equal(up[:, :-1], x[:, 1:]) ; assert not up[:, -1].any()
    # einops 'b c (h p1) (w p2) -> b (h w) (p1 p2 c)' on the NCHW tensor.
    nchw, p = np.transpose(s, (0, 3, 1, 2)), 2
    tokens = np.asarray(patchify(jnp.asarray(s), p))
    assert tokens.shape == (2, 4, 4 * 15)
    for h in range(2):
        for w in range(2):
            for p1 in range(p):
                for p2 in range(p):
                    for c in range(15):
                        assert tokens[1, h * 2 + w, (p1 * p + p2) * 15 + c] == nchw[1, c, h * p + p1, w * p + p2]


def test_a_token_never_attends_to_itself():
    attn_module = LocalitySelfAttention(dim=8, heads=2, dim_head=4)
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 5, 8))
    variables = attn_module.init(jax.random.PRNGKey(1), x)
    _, state = attn_module.apply(variables, x, mutable=['intermediates'])
    (weights,) = state['intermediates']['attention']
    assert weights.shape == (3, 2, 5, 5)
    assert np.all(np.asarray(weights)[:, :, np.arange(5), np.arange(5)] == 0.0)
    np.testing.assert_allclose(np.asarray(weights).sum(-1), 1.0, rtol=1e-6)
    q = k = jnp.ones((1, 3, 1, 2))                   # equal scores off the diagonal: 1/2 each
    np.testing.assert_allclose(attention_weights(q, k, jnp.float32(0.0))[0, 0], (1 - np.eye(3)) / 2, rtol=1e-6)


def _reference_logits(p, x, patch, heads, dim_head):
    """The authors' forward pass (models/vit_small.py, eval mode) in float64 NumPy, NCHW like theirs."""
    f = lambda t: np.asarray(t, np.float64)
    ln = lambda t, q: (t - t.mean(-1, keepdims=True)) / np.sqrt(t.var(-1, keepdims=True) + 1e-5) * f(q['scale']) + f(q['bias'])
    lin = lambda t, q: t @ f(q['kernel']) + (f(q['bias']) if 'bias' in q else 0)
    x = np.transpose(f(x), (0, 3, 1, 2))
    r, l_, d, u = (np.zeros_like(x) for _ in range(4))
    r[..., 1:] = x[..., :-1]; l_[..., :-1] = x[..., 1:]; d[..., 1:, :] = x[..., :-1, :]; u[..., :-1, :] = x[..., 1:, :]
    x = np.concatenate([x, r, l_, d, u], 1)
    b, c, hh, ww = x.shape
    x = x.reshape(b, c, hh // patch, patch, ww // patch, patch).transpose(0, 2, 4, 3, 5, 1).reshape(b, -1, patch * patch * c)
    e = p['embed']
    x = lin(ln(x, e['norm']), e['proj'])
    x = np.concatenate([np.repeat(f(e['cls']), b, 0), x], 1) + f(e['pos'])
    n = x.shape[1]
    for i in range(1, len(p) - 1):
        blk = p[f'block{i}']
        y = lin(ln(x, blk['attn_norm']), blk['attn']['qkv'])
        q, k, v = (t.reshape(b, n, heads, dim_head).transpose(0, 2, 1, 3) for t in np.split(y, 3, -1))
        dots = q @ k.transpose(0, 1, 3, 2) * np.exp(f(blk['attn']['temperature']))
        dots[..., np.arange(n), np.arange(n)] = -np.finfo(np.float64).max
        a = np.exp(dots - dots.max(-1, keepdims=True)); a /= a.sum(-1, keepdims=True)
        x = lin((a @ v).transpose(0, 2, 1, 3).reshape(b, n, -1), blk['attn']['out']) + x
        y = lin(ln(x, blk['mlp_norm']), blk['mlp']['fc1'])
        x = lin(0.5 * y * (1 + erf(y / np.sqrt(2))), blk['mlp']['fc2']) + x   # nn.GELU(): exact
    return lin(ln(x[:, 0], p['head']['norm']), p['head']['dense'])


def test_the_forward_pass_is_the_authors():
    model = tiny(depth=2, heads=2)
    variables = init(model, (8, 8, 3), 0)
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 8, 3))
    ours = model.logits(variables, x)
    ref = _reference_logits(variables['params'], np.asarray(x), patch=2, heads=2, dim_head=64)
    np.testing.assert_allclose(ours, ref, rtol=2e-4, atol=2e-5)


def test_dropout_only_in_training_with_a_key_and_deterministic_for_a_key():
    model = tiny()
    variables = init(model, (8, 8, 3), 0)
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 8, 8, 3))
    key = jax.random.PRNGKey(7)
    evaluation = model.logits(variables, x)
    np.testing.assert_array_equal(model.apply(variables, x, rng=key).output, evaluation)      # train=False
    np.testing.assert_array_equal(model.apply(variables, x, train=True).output, evaluation)   # no key
    a = model.apply(variables, x, train=True, rng=key, capture=True)
    np.testing.assert_array_equal(a.output, model.apply(variables, x, train=True, rng=key).output)
    assert np.abs(a.output - evaluation).max() > 1e-3
    assert np.abs(a.output - model.apply(variables, x, train=True, rng=jax.random.PRNGKey(8)).output).max() > 1e-3
    # Stage i's key is fold_in(rng, i) whatever slice runs it: consecutive slices give the full pass.
    h = model.apply(variables, x, train=True, rng=key, stop='block2').output
    np.testing.assert_array_equal(h, a.features['block1'])
    np.testing.assert_array_equal(model.apply(variables, h, train=True, rng=key, start='block2').output, a.output)
    # Without dropout (rates 0) training mode with a key is evaluation mode.
    plain = vit_small(5, 16, depth=2, heads=2, dropout=0.0, emb_dropout=0.0)
    np.testing.assert_array_equal(plain.apply(variables, x, train=True, rng=key).output, evaluation)


def test_the_training_step_draws_dropout_from_data_key_epoch_and_step():
    model = tiny(num_classes=3)
    trainable = ClassifierTrainable(runner_for(model, np.zeros(3), np.ones(3)),
                                    OptimizerSpec('sgd', 0.1, momentum=0.0))
    state = trainable.init(model.init(jax.random.PRNGKey(0), (8, 8, 3)))
    images = jax.random.randint(jax.random.PRNGKey(1), (8, 8, 8, 3), 0, 256).astype(jnp.uint8)
    labels = jnp.arange(8, dtype=jnp.int32) % 3
    step = jax.jit(lambda key, epoch, s: trainable.step(state, idx=jnp.arange(4), weights=jnp.ones(4), epoch=epoch,
                                                         step=s, pool=images, labels=labels, data_key=key))
    run = lambda key, epoch, s: step(key, jnp.int32(epoch), jnp.int32(s))
    key = jax.random.PRNGKey(5)
    (s1, l1), (s2, l2) = run(key, 0, 0), run(key, 0, 0)
    assert float(l1) == float(l2)
    jax.tree_util.tree_map(np.testing.assert_array_equal, s1.params, s2.params)
    # The loss of batch 0 with dropout on differs from the evaluation-mode loss, and between epochs.
    logits = model.logits(state.variables, normalize(images[:4], jnp.zeros(3), jnp.ones(3)))
    eval_loss = float(optax.softmax_cross_entropy_with_integer_labels(logits, labels[:4]).mean())
    assert abs(float(l1) - eval_loss) > 1e-4
    assert float(run(key, 1, 0)[1]) != float(l1)
    assert not np.array_equal(dropout_key(key, 0, 1), dropout_key(key, 1, 0))
