"""Label noise with a record: which examples were relabelled, and to what.

For one replica (noise ratio r, seed s) exactly `round(r * N)` training examples
(rounding half up) are relabelled:

- mode 'random': the new label is uniform over all K classes and may equal the
  true one (P1, P2: "assigning random labels"; the relabelled set D_n^r is the
  set drawn, whether or not a label changed).
- mode 'incorrect': uniform over the K - 1 wrong classes (P3). Implemented as
  (y + k) mod K with k uniform in 1..K-1 (P3's public code draws k in 1..K-2,
  which can never pick (y - 1) mod K: a bug we do not copy).

The draw: a NumPy PCG64 stream keyed by (noise_seed, stream) makes one
permutation of the examples and one candidate label per example, and r takes
the first round(r * N) of that permutation. The stream is

- per seed (`shared_across_seeds=False`, the default; P1-P3, which train one
  model per (r, s)): stream = s, so the relabelled set and its labels depend
  on (noise_seed, r, s), and two seeds of one ratio share about 1/K of their
  new labels by chance;
- shared (`shared_across_seeds=True`, P4 section 4: every random-label model
  trains on the same X_R; only initialisation and data order vary):
  stream = 0 for every seed, so they depend on (noise_seed, r) alone and every
  seed of a ratio gets the same relabelled set and the same labels (those of
  seed 0 under the per-seed draw).

Either way the noisy sets of one stream are nested across ratios (D_n^0.2 is
inside D_n^0.5, with the same new labels): per seed, for each seed; shared,
across all replicas of the run. The same (r, stream) always gives the same
labels, on any machine.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np

from memjax.errors import ConfigError

NOISE_MODES = ('random', 'incorrect')


class NoisyLabels(NamedTuple):
    """Labels of R replicas over N training examples.

    Attributes:
      labels: int32 [R, N] the labels each replica trains on.
      mask: bool [R, N] True for the relabelled examples (D_n^r).
    """

    labels: np.ndarray
    mask: np.ndarray


def num_noisy(ratio: float, num_examples: int) -> int:
    """round(ratio * N), rounding halves up (Python's round would round to even)."""
    return int(math.floor(ratio * num_examples + 0.5))


def check_ratio(ratio: float) -> float:
    ratio = float(ratio)
    if not 0.0 <= ratio <= 1.0 or math.isnan(ratio):
        raise ConfigError(
            f"noise ratio {ratio} is outside [0, 1]; give fractions such as "
            "--config.noise.ratios='(0.0, 0.2, 0.5)' (1.0 relabels every example)")
    return ratio


def label_stream(seed: int, shared_across_seeds: bool) -> int:
    """The stream a replica of seed `seed` draws its labels from (0 for every seed when shared)."""
    return 0 if shared_across_seeds else int(seed)


def replica_labels(true_labels: np.ndarray, num_classes: int, ratio: float, seed: int,
                   noise_seed: int, mode: str, shared_across_seeds: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Noisy labels of one replica.

    Args:
      true_labels: int [N] correct labels.
      num_classes: K.
      ratio: fraction r in [0, 1] to relabel.
      seed: the replica's seed s.
      noise_seed: the run's noise seed.
      mode: 'random' or 'incorrect'.
      shared_across_seeds: True: the labels ignore `seed` (P4's one X_R per ratio).

    Returns:
      (labels int32 [N], mask bool [N]).
    """
    ratio = check_ratio(ratio)
    if mode not in NOISE_MODES:
        raise ConfigError(f"unknown noise.mode {mode!r}; use 'random' (any class, P1/P2) or "
                          "'incorrect' (a wrong class, P3)")
    true_labels = np.asarray(true_labels, np.int32)
    n = true_labels.shape[0]
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(noise_seed), label_stream(seed, shared_across_seeds)])))
    order = rng.permutation(n)
    if mode == 'random':
        candidates = rng.integers(0, num_classes, n)
    else:
        candidates = (true_labels[order] + rng.integers(1, num_classes, n)) % num_classes
    chosen = order[:num_noisy(ratio, n)]
    labels = true_labels.copy()
    labels[chosen] = candidates[:chosen.size]
    mask = np.zeros(n, bool)
    mask[chosen] = True
    return labels, mask


def noisy_labels(true_labels: np.ndarray, num_classes: int, ratios: Sequence[float],
                 seeds: Sequence[int], noise_seed: int, mode: str,
                 shared_across_seeds: bool = False) -> NoisyLabels:
    """Stacks `replica_labels` for replicas (ratios[i], seeds[i]): [R, N] arrays."""
    pairs = [replica_labels(true_labels, num_classes, r, s, noise_seed, mode, shared_across_seeds)
             for r, s in zip(ratios, seeds)]
    return NoisyLabels(np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]))
