"""Finds the analyses by name and builds (and checks) their settings.

Every module of the analysis subpackages that defines `NAME`, `Settings` and
`run` is an analysis (see `memjax.analysis.settings`). Optional module
attributes:

- `SETTINGS_KEY`: the config node its Settings are read from, when analyses
  share one (convergence and noisy_vs_clean read `analysis.cka`); default NAME.
- `USES`: other settings keys it reads from `context.shared` (cka_matrix uses 'cka').

Adding an analysis is adding one such module; its config node, its checks
before training and its README table follow from its Settings.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import pkgutil
import types
import typing
from typing import Any

from ml_collections import ConfigDict
from ml_collections.config_dict import placeholder

from memjax.errors import ConfigError

# The subpackages, one per method family (the papers' structure).
PACKAGES = ('similarity', 'stitching', 'localization', 'dissection', 'geometry')


@dataclasses.dataclass(frozen=True)
class Analysis:
    """One registered analysis: its name, module, settings class and where they live."""

    name: str
    module: types.ModuleType
    settings_key: str
    uses: tuple[str, ...]

    @property
    def settings(self) -> type:
        return self.module.Settings

    @property
    def package(self) -> str:
        return self.module.__name__.split('.')[-2]


@functools.cache
def analyses() -> dict[str, Analysis]:
    """name -> Analysis for every analysis module, in package order."""
    found: dict[str, Analysis] = {}
    for package_name in PACKAGES:
        try:
            package = importlib.import_module(f'memjax.analysis.{package_name}')
        except ModuleNotFoundError:
            continue
        for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
            module = importlib.import_module(f'{package.__name__}.{info.name}')
            if not all(hasattr(module, attr) for attr in ('NAME', 'Settings', 'run')):
                continue
            key = getattr(module, 'SETTINGS_KEY', module.NAME)
            module.Settings.KEY = key
            found[module.NAME] = Analysis(module.NAME, module, key, tuple(getattr(module, 'USES', ())))
    return found


def analysis_names() -> tuple[str, ...]:
    return tuple(analyses())


def settings_classes() -> dict[str, type]:
    """config key -> Settings class (one per `analysis.<key>` node)."""
    classes: dict[str, type] = {}
    for analysis in analyses().values():
        classes.setdefault(analysis.settings_key, analysis.settings)
    return classes


def _config_value(cls: type, field: dataclasses.Field) -> Any:
    """A default as a ConfigDict value: None becomes a typed placeholder so overrides are type-checked."""
    if field.default is not None:
        return field.default
    hint = typing.get_type_hints(cls)[field.name]
    types_ = [t for t in typing.get_args(hint) if t is not type(None)] or [hint]
    return placeholder(types_[0])


def analysis_config() -> ConfigDict:
    """The `config.analysis` node: one sub-node per settings key, defaults from the dataclasses."""
    node = ConfigDict()
    for key, cls in settings_classes().items():
        node[key] = ConfigDict({f.name: _config_value(cls, f) for f in dataclasses.fields(cls)})
    return node


def check_names(names) -> None:
    for name in names:
        if name not in analyses():
            raise ConfigError(f"unknown analysis {name!r} in config.analyses; available: "
                              f"{', '.join(analysis_names())}")


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
        analysis = analyses()[name]
        for key in (analysis.settings_key, *analysis.uses):
            if key not in keys:
                keys.append(key)
    classes = settings_classes()
    built = {}
    for key in keys:
        settings = classes[key].from_config(config.analysis.get(key) or {}, key)
        settings.check_config(config)
        if model is not None:
            settings.check_model(model)
        built[key] = settings
    return built


def check_data(settings: dict, facts) -> None:
    """Every built settings' `check_data` against the run's data facts (`memjax.data.facts.DataFacts`)."""
    for value in settings.values():
        value.check_data(facts)


def markdown_tables() -> str:
    """The README's analysis key tables, generated from the Settings dataclasses."""
    lines = []
    users: dict[str, list[str]] = {}
    for analysis in analyses().values():
        users.setdefault(analysis.settings_key, []).append(analysis.name)
        for key in analysis.uses:
            users.setdefault(key, []).append(analysis.name)
    for key, cls in settings_classes().items():
        lines += [f'#### `analysis.{key}` ({", ".join(users[key])})', '', '| key | default | meaning |',
                  '|---|---|---|']
        for field in dataclasses.fields(cls):
            choices = field.metadata.get('choices') or ()
            meaning = field.metadata.get('help', '') + (f" ({' / '.join(map(str, choices))})" if choices else '')
            lines.append(f'| `{field.name}` | `{field.default!r}` | {meaning} |')
        lines.append('')
    return '\n'.join(lines)
