import numpy as np
import pytest

from memjax.data.noise import noisy_labels, num_noisy, replica_labels
from memjax.errors import ConfigError

TRUE = np.random.default_rng(0).integers(0, 10, 1001).astype(np.int32)


@pytest.mark.parametrize('ratio', [0.0, 0.05, 0.2, 0.375, 0.5, 1.0])
@pytest.mark.parametrize('mode', ['random', 'incorrect'])
def test_exact_count_relabelled(ratio, mode):
    labels, mask = replica_labels(TRUE, 10, ratio, seed=3, noise_seed=1, mode=mode)
    assert mask.sum() == num_noisy(ratio, TRUE.size)
    assert np.array_equal(labels[~mask], TRUE[~mask])
    assert labels.dtype == np.int32 and labels.min() >= 0 and labels.max() < 10


def test_rounding_is_half_up():
    assert num_noisy(0.5, 5) == 3  # Python's round(2.5) would give 2
    assert num_noisy(0.375, 1000) == 375
    assert num_noisy(1 / 3, 10) == 3


def test_incorrect_mode_never_keeps_the_true_label_and_reaches_every_wrong_class():
    true = np.repeat(np.arange(10, dtype=np.int32), 500)
    labels, mask = replica_labels(true, 10, 1.0, seed=0, noise_seed=0, mode='incorrect')
    assert mask.all() and np.all(labels != true)
    # Every wrong class, including (y - 1) mod K which P3's public code never picks.
    offsets = (labels - true) % 10
    counts = np.bincount(offsets, minlength=10)
    assert counts[0] == 0 and np.all(counts[1:] > 400)


def test_random_mode_is_uniform_over_all_classes_including_the_true_one():
    true = np.zeros(20000, np.int32)
    labels, mask = replica_labels(true, 10, 1.0, seed=0, noise_seed=0, mode='random')
    counts = np.bincount(labels, minlength=10)
    assert np.all(np.abs(counts - 2000) < 200)  # about 1/10 keep class 0
    assert mask.all()


def test_same_ratio_and_seed_give_identical_labels_and_other_seeds_differ():
    a = replica_labels(TRUE, 10, 0.2, seed=1, noise_seed=7, mode='random')
    b = replica_labels(TRUE, 10, 0.2, seed=1, noise_seed=7, mode='random')
    c = replica_labels(TRUE, 10, 0.2, seed=2, noise_seed=7, mode='random')
    d = replica_labels(TRUE, 10, 0.2, seed=1, noise_seed=8, mode='random')
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1]) and not np.array_equal(a[1], d[1])


def test_noisy_sets_of_one_seed_are_nested_across_ratios():
    small_labels, small = replica_labels(TRUE, 10, 0.2, 0, 0, 'random')
    big_labels, big = replica_labels(TRUE, 10, 0.5, 0, 0, 'random')
    assert np.all(big[small])
    assert np.array_equal(small_labels[small], big_labels[small])


def test_stacked_replicas_match_single_calls():
    stacked = noisy_labels(TRUE, 10, [0.0, 0.5], [0, 1], noise_seed=0, mode='incorrect')
    assert stacked.labels.shape == (2, TRUE.size) and stacked.mask.shape == (2, TRUE.size)
    single = replica_labels(TRUE, 10, 0.5, 1, 0, 'incorrect')
    assert np.array_equal(stacked.labels[1], single[0])
    assert not stacked.mask[0].any()


@pytest.mark.parametrize('ratio', [-0.1, 1.5, float('nan')])
def test_ratio_outside_unit_interval_is_a_clear_error(ratio):
    with pytest.raises(ConfigError, match='outside'):
        replica_labels(TRUE, 10, ratio, 0, 0, 'random')


def test_unknown_mode_is_a_clear_error():
    with pytest.raises(ConfigError, match="'flip'"):
        replica_labels(TRUE, 10, 0.1, 0, 0, 'flip')


@pytest.mark.parametrize('mode', ['random', 'incorrect'])
def test_shared_draw_gives_every_seed_of_a_ratio_one_relabelled_set(mode):
    """P4's X_R: with shared_across_seeds the set and labels depend on (noise seed, ratio) alone and stay
    nested across ratios; the per-seed default gives each seed its own draw."""
    ratios, seeds = [0.5, 0.5, 0.5, 1.0, 1.0], [0, 1, 5, 2, 3]
    shared = noisy_labels(TRUE, 10, ratios, seeds, noise_seed=4, mode=mode, shared_across_seeds=True)
    per_seed = noisy_labels(TRUE, 10, ratios, seeds, noise_seed=4, mode=mode)
    for i in (1, 2):
        assert np.array_equal(shared.labels[i], shared.labels[0]) and np.array_equal(shared.mask[i], shared.mask[0])
        assert not np.array_equal(per_seed.mask[i], per_seed.mask[0])
    assert np.array_equal(shared.labels[4], shared.labels[3])
    assert np.all(shared.mask[3][shared.mask[0]])  # D^0.5 inside D^1, same new labels, across seeds
    assert np.array_equal(shared.labels[0][shared.mask[0]], shared.labels[3][shared.mask[0]])
    other = noisy_labels(TRUE, 10, [1.0], [0], noise_seed=5, mode=mode, shared_across_seeds=True)
    assert not np.array_equal(other.labels[0], shared.labels[3])  # the noise seed still matters
