"""Critical stitching depths (P2 section 5), read off accuracy-vs-depth curves.

Depth l = the number of stages in the stitched model's base (stitch after
stage l-1). With chance = 1/K and two explicit tolerances:

clean-to-noisy h_r(S(g_0)) (clean base of depth l, noisy head):
- l_c^m: the smallest depth whose memorization accuracy is near chance,
  mem(l) <= chance + memorization_tolerance;
- l_c^g: the smallest depth whose test accuracy matches the clean model's,
  test(l) >= clean_test - generalization_tolerance.

noisy-to-clean h_0(S(g_r)) (noisy base of depth l, clean head):
- l_n^m: the smallest depth at which memorization emerges,
  mem(l) > chance + memorization_tolerance;
- l_n^g: the depth beyond which test accuracy drops from the clean model's:
  the largest l such that every depth <= l keeps test >= clean_test -
  generalization_tolerance (0 if even depth 1 drops).

A depth that no point of the curve satisfies is None.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def _first(depths: Sequence[int], condition: np.ndarray) -> int | None:
    hits = np.flatnonzero(condition)
    return int(depths[hits[0]]) if hits.size else None


def critical_depths(direction: str, depths: Sequence[int], memorization: Sequence[float],
                    test: Sequence[float], chance: float, clean_test: float,
                    memorization_tolerance: float, generalization_tolerance: float) -> dict:
    """The two critical depths of one curve.

    Args:
      direction: 'clean_to_noisy' or 'noisy_to_clean'.
      depths: increasing base depths l.
      memorization, test: accuracies at each depth.
      chance: 1 / num_classes; clean_test: the clean model's test accuracy.

    Returns:
      {'l_c^m', 'l_c^g'} or {'l_n^m', 'l_n^g'}.
    """
    mem, acc = np.asarray(memorization, float), np.asarray(test, float)
    near_chance = mem <= chance + memorization_tolerance
    matches = acc >= clean_test - generalization_tolerance
    if direction == 'clean_to_noisy':
        return {'l_c^m': _first(depths, near_chance), 'l_c^g': _first(depths, matches)}
    if direction == 'noisy_to_clean':
        drop = _first(depths, ~matches)
        if drop is None:
            generalization = int(depths[-1])
        else:
            before = [d for d in depths if d < drop]
            generalization = int(before[-1]) if before else 0
        return {'l_n^m': _first(depths, ~near_chance), 'l_n^g': generalization}
    raise ValueError(f'unknown direction {direction!r}')
