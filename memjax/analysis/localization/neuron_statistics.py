"""The critical-neuron count as a detector of mislabelled examples: its AUC, with censored searches explicit."""

from __future__ import annotations

import numpy as np


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
