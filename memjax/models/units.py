"""Units of analysis: a model cut into stages, layers or P3's layer groups.

Analyses that act on "a layer" (CKA, gradient accounting, rewinding,
retraining, critical neurons) take a `granularity` and work on the units it
gives; every unit is a named set of variable subtrees:

- 'stage': one unit per stage (`stem`, `layer1.0`, ..., `head`), as P1/P2
  name them (a residual block is one unit);
- 'layer': one unit per layer (`layer1.0.conv_bn1`, `layer1.0.conv_bn2`,
  `layer2.0.shortcut`, `head.dense`; see `layer_index`);
- 'p3_groups': the layer groups of Maini et al.'s code
  (experiments/layer_groups.py): ResNet-18/34/50 (and ResNet-32) `stem`,
  `layer1` .. `layer4` (every block of the residual group) and the classifier;
  ResNet-9 its 9 layers (the 8 convs with their BatchNorm and the linear
  layer); the CNN, VGG and ViT their layers (the ViT's patch embedding, each
  block, the head). In general: stages named `layerK.M` merge into `layerK`,
  every other stage splits into its layers.

The output of a unit (for CKA) is the output of its last layer or stage.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from memjax.errors import ConfigError

GRANULARITIES = ('stage', 'layer', 'p3_groups')

_BLOCK = re.compile(r'^(layer\d+)\.\d+$')


class Unit(NamedTuple):
    """A unit of analysis.

    Attributes:
      name: its label (`layer1`, `layer1.0.conv_bn1`, `stem`).
      paths: keys into params/batch_stats, each a tuple starting with a stage.
      layers: the layer names inside it, in forward order.
      output: the stage or layer name whose output is the unit's output
        (`StagedModel.apply(capture=[output])`).
    """

    name: str
    paths: tuple[tuple[str, ...], ...]
    layers: tuple[str, ...]
    output: str


def model_units(model, granularity: str) -> tuple[Unit, ...]:
    """The units of `model` (a StagedModel) at one granularity, in forward order."""
    if granularity not in GRANULARITIES:
        raise ConfigError(f"granularity {granularity!r} is not one of {', '.join(GRANULARITIES)}")
    by_stage: dict[str, list] = {stage: [] for stage in model.stage_names}
    for layer in model.layers:
        by_stage[layer.stage].append(layer)
    if granularity == 'layer':
        return tuple(Unit(layer.name, (layer.path,), (layer.name,), layer.name) for layer in model.layers)
    if granularity == 'stage':
        return tuple(Unit(stage, ((stage,),), tuple(layer.name for layer in by_stage[stage]), stage)
                     for stage in model.stage_names)
    units: list[Unit] = []
    for stage in model.stage_names:
        match = _BLOCK.match(stage)
        if match:
            group = match.group(1)
            names = tuple(layer.name for layer in by_stage[stage])
            if units and units[-1].name == group:
                last = units[-1]
                units[-1] = Unit(group, last.paths + ((stage,),), last.layers + names, stage)
            else:
                units.append(Unit(group, ((stage,),), names, stage))
        elif len(by_stage[stage]) == 1 and by_stage[stage][0].name == stage:
            units.append(Unit(stage, ((stage,),), (stage,), stage))
        else:
            units += [Unit(layer.name, (layer.path,), (layer.name,), layer.name) for layer in by_stage[stage]]
    return tuple(units)


def select_units(units: tuple[Unit, ...], names, key: str) -> tuple[Unit, ...]:
    """The named units in model order (all when `names` is empty); one error line naming `key` otherwise."""
    known = [u.name for u in units]
    for name in names:
        if name not in known:
            raise ConfigError(f"{key} names {name!r}, which is not a unit at this granularity; the units are: "
                              f"{', '.join(known)}")
    return tuple(u for u in units if not names or u.name in names)
