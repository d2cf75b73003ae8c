"""The `granularity` every P3 analysis takes, and the units it names.

Gradient accounting, rewinding, retraining and the critical-neuron report act
on units of the model (`memjax.models.units`): 'p3_groups' (the default: P3's
layer groups, e.g. ResNet-9's 9 = 8 convs with BatchNorm and the linear layer,
ResNet-18/50's stem, layer1..layer4 and the classifier), 'layer' (every conv
with its BatchNorm and every linear layer) or 'stage' (memjax's stages, one per
residual block). Every result row names its unit and the granularity.
"""

from __future__ import annotations

from memjax.analysis.settings import setting
from memjax.models.units import GRANULARITIES, Unit, select_units


def granularity_setting():
    """The `granularity` field of a P3 analysis's Settings (its default lives here only)."""
    return setting('p3_groups', "units acted on: p3_groups (P3's layer groups), layer (every conv+BN and linear "
                   'layer) or stage (one per residual block)', choices=GRANULARITIES)


def chosen_units(model, granularity: str, names=(), key: str = '') -> tuple[Unit, ...]:
    """The units of `model` at `granularity`, restricted to `names` (all when empty; unknown ones are one error)."""
    return select_units(model.units(granularity), tuple(names), key)
