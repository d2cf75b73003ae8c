import jax
import jax.numpy as jnp
import numpy as np

from memjax.data.pipeline import epoch_order, normalize, random_crop_flip


def test_epoch_order_is_a_permutation_that_changes_with_the_epoch():
    key = jax.random.PRNGKey(0)
    a, b = epoch_order(key, 1, 100), epoch_order(key, 2, 100)
    assert sorted(np.asarray(a).tolist()) == list(range(100))
    assert not np.array_equal(a, b) and np.array_equal(a, epoch_order(key, 1, 100))


def test_random_crop_flip_moves_content_by_at_most_the_padding():
    images = jnp.arange(2 * 8 * 8, dtype=jnp.int32).reshape(2, 8, 8, 1) + 1
    out = random_crop_flip(images, jax.random.PRNGKey(3), pad=4)
    assert out.shape == images.shape and out.dtype == images.dtype
    for i in range(2):
        values = set(np.asarray(out[i]).ravel().tolist()) - {0}
        assert values <= set(np.asarray(images[i]).ravel().tolist())
    again = random_crop_flip(images, jax.random.PRNGKey(3), pad=4)
    assert np.array_equal(out, again)


def test_normalize_uses_channel_statistics():
    images = jnp.full((1, 2, 2, 3), 255, jnp.uint8)
    out = normalize(images, jnp.array([0.5, 0.5, 1.0]), jnp.array([0.5, 0.25, 1.0]))
    np.testing.assert_allclose(out[0, 0, 0], [1.0, 2.0, 0.0])
