"""The analyses by name: an explicit table, each module imported when first needed.

An analysis is one module (see `memjax.analysis.settings`) defining `NAME`,
`Settings` (its keys, `config.analysis.<Settings.KEY>`, several analyses may
share one) and `run`, and optionally `USES`: other settings keys it reads from
`context.shared` (cka_matrix uses 'cka'). Adding one is adding its module,
one line in `ANALYSES` and its test; its config node, its checks before
training, its smoke values and its README table follow from its Settings.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import types
from typing import Any

from ml_collections import ConfigDict

from memjax.errors import ConfigError

# name -> module, in the papers' order (P1/P2 similarity and stitching, P3, P4, P5).
ANALYSES = {
    'convergence': 'memjax.analysis.similarity.convergence',
    'noisy_vs_clean': 'memjax.analysis.similarity.noisy_vs_clean',
    'cka_matrix': 'memjax.analysis.similarity.cka_matrix',
    'stitching': 'memjax.analysis.stitching.stitching',
    'finetune': 'memjax.analysis.stitching.finetune',
    'gradients': 'memjax.analysis.localization.gradients',
    'rewinding': 'memjax.analysis.localization.rewinding',
    'retraining': 'memjax.analysis.localization.retraining',
    'neurons': 'memjax.analysis.localization.neurons',
    'example_tied': 'memjax.analysis.localization.example_tied',
    'weight_change': 'memjax.analysis.localization.weight_change',
    'input_gradients': 'memjax.analysis.dissection.input_gradients',
    'dissimilarity': 'memjax.analysis.dissection.dissimilarity',
    'manifolds': 'memjax.analysis.geometry.manifolds',
}


@dataclasses.dataclass(frozen=True)
class Analysis:
    """One registered analysis: its name and module, its settings class and the keys it reads."""

    name: str
    module: types.ModuleType

    @property
    def settings(self) -> type:
        return self.module.Settings

    @property
    def settings_key(self) -> str:
        return self.module.Settings.KEY

    @property
    def uses(self) -> tuple[str, ...]:
        return tuple(getattr(self.module, 'USES', ()))


@functools.cache
def analysis(name: str) -> Analysis:
    """The analysis `name` (its module imported now); one error line for an unknown name."""
    if name not in ANALYSES:
        raise ConfigError(f"unknown analysis {name!r} in config.analyses; available: {', '.join(ANALYSES)}")
    module = importlib.import_module(ANALYSES[name])
    assert module.NAME == name, f'{ANALYSES[name]} defines NAME={module.NAME!r}, not {name!r}'
    return Analysis(name, module)


def analyses() -> dict[str, Analysis]:
    """name -> Analysis for every analysis (imports them all)."""
    return {name: analysis(name) for name in ANALYSES}


def analysis_names() -> tuple[str, ...]:
    return tuple(ANALYSES)


def settings_classes() -> dict[str, type]:
    """config key -> Settings class (one per `analysis.<key>` node)."""
    classes: dict[str, type] = {}
    for analysis in analyses().values():
        classes.setdefault(analysis.settings_key, analysis.settings)
    return classes


def analysis_config() -> ConfigDict:
    """The `config.analysis` node: one sub-node per settings key, defaults from the dataclasses."""
    return ConfigDict({key: cls.config_node() for key, cls in settings_classes().items()})


def check_names(names) -> None:
    for name in names:
        analysis(name)


def build_settings(config, model=None) -> dict[str, Any]:
    """Validated settings of every key the listed analyses read: {key: Settings}.

    Checks names, unknown keys, types, choices, ranges, relations between fields
    and with the training keys and (given the model) stage and layer names;
    raises ConfigError with one line naming key, value and fix. The checks that
    need the data follow once it has loaded (`check_data`).
    """
    listed = tuple(config.analyses)
    check_names(listed)
    keys: list[str] = []
    for name in listed:
        found = analysis(name)
        for key in (found.settings_key, *found.uses):
            if key not in keys:
                keys.append(key)
    classes = settings_classes()
    built = {}
    for key in keys:
        settings = classes[key].from_config(config.analysis.get(key) or {}, key)
        if model is not None:
            settings.check_model(model)
        settings.check_config(config)
        built[key] = settings
    return built


def check_data(settings: dict, facts) -> None:
    """Every built settings' `check_data` against the run's data facts (`memjax.data.facts.DataFacts`)."""
    for value in settings.values():
        value.check_data(facts)


def markdown_tables() -> str:
    """The README's analysis key tables, generated from the Settings dataclasses."""
    users: dict[str, list[str]] = {}
    for found in analyses().values():
        for key in (found.settings_key, *found.uses):
            users.setdefault(key, []).append(found.name)
    return '\n'.join(cls.markdown_table(f'#### `analysis.{key}` ({", ".join(users[key])})')
                     for key, cls in settings_classes().items())
