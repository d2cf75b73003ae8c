"""The lifting layer: vmap, map, loop and shard compute the same replicas, programs are cached, inactive
replicas keep their state."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memjax.engine.lifting import KINDS, Lifting, Replicas, lift, stacked


@dataclasses.dataclass(frozen=True)
class ConvStep:
    """One SGD step of a conv + linear classifier (the grouped-convolution case of vmap)."""

    learning_rate: float

    def __call__(self, params, images, labels, active, *, scale):
        def loss(p):
            h = jax.lax.conv_general_dilated(images * scale, p['conv'], (1, 1), 'SAME',
                                             dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
            logits = jnp.mean(jax.nn.relu(h), axis=(1, 2)) @ p['dense']
            return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1))
        value, grads = jax.value_and_grad(loss)(params)
        new = jax.tree_util.tree_map(lambda p, g: p - self.learning_rate * g, params, grads)
        return jax.tree_util.tree_map(lambda n, o: jnp.where(active, n, o), new, params), jnp.where(active, value, 0.)


def replicas(r=3):
    keys = jax.random.split(jax.random.PRNGKey(0), r)
    params = {'conv': jax.vmap(lambda k: jax.random.normal(k, (3, 3, 2, 4)))(keys),
              'dense': jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, 1), (4, 3)))(keys)}
    images = jax.random.normal(jax.random.PRNGKey(1), (8, 6, 6, 2))
    labels = jax.random.randint(jax.random.PRNGKey(2), (r, 8), 0, 3)
    return params, images, labels


@pytest.mark.parametrize('kind', KINDS)
def test_every_lifting_computes_each_replica_as_it_alone(kind):
    params, images, labels = replicas()
    step = ConvStep(0.1)
    active = np.array([True, False, True])
    program = lift(step, ('params', 'labels', 'active'), kind, static=('scale',), carry='params')
    new, loss = program(running=active, params=params, images=images, labels=labels, active=jnp.asarray(active),
                        scale=2.0)
    new, loss = stacked(new), np.asarray(stacked(loss))
    for i in range(3):
        one = jax.tree_util.tree_map(lambda x: x[i], params)
        expected, expected_loss = step(one, images, labels[i], jnp.asarray(active[i]), scale=2.0)
        for a, b in zip(jax.tree_util.tree_leaves(jax.tree_util.tree_map(lambda x: x[i], new)),
                        jax.tree_util.tree_leaves(expected)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(loss[i], expected_loss, rtol=1e-5, atol=1e-6)
    assert loss[1] == 0 and loss[0] > 0
    for a, b in zip(jax.tree_util.tree_leaves(new), jax.tree_util.tree_leaves(params)):
        assert np.array_equal(np.asarray(a[1]), np.asarray(b[1]))  # the inactive replica, bit for bit


def test_loop_keeps_replicas_unstacked_and_the_same_program_is_reused():
    params, images, labels = replicas()
    first = lift(ConvStep(0.1), ('params', 'labels', 'active'), 'loop', static=('scale',), carry='params')
    again = lift(ConvStep(0.1), ('params', 'labels', 'active'), Lifting('loop'), static=('scale',), carry='params')
    assert again is first  # equal steps: one program (and its compiled executables)
    assert lift(ConvStep(0.2), ('params', 'labels', 'active'), 'loop', static=('scale',), carry='params') is not first
    new, loss = first(params=params, images=images, labels=labels, active=jnp.ones(3, bool), scale=1.0)
    assert isinstance(new, Replicas) and len(new) == 3 and isinstance(loss, Replicas)
    compiled = dict(first._compiled)
    again_new, _ = first(params=new, images=images, labels=labels, active=jnp.ones(3, bool), scale=1.0)
    assert first._compiled == compiled and len(again_new) == 3  # nothing new was built
