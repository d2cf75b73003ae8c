"""One typed schema for every key of a config: training keys and analysis keys alike.

A group of keys is a frozen dataclass deriving from `Settings`, with a
`KEY` (its config node, e.g. 'train' or 'analysis.cka') and one field per
key, declared with `setting(default, help, choices=... | range=...)`: the
ONLY place that key's default, allowed values and meaning are written. From
it follow the config node (`config_node`, with typed placeholders so
`--config.a.b=v` overrides are type-checked), the check at start-up
(`from_config`: type, choices and range of every field by one function,
`check_field`, then the group's own `validate` for relations between its
fields), the README's key tables (`markdown_table`) and the smoke variant's
values (`SMOKE`).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any, ClassVar

from ml_collections import ConfigDict
from ml_collections.config_dict import placeholder

from memjax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Range:
    """The allowed values of a number setting (or of each number in a tuple setting).

    `low` / `high` are bounds (None: unbounded), closed unless `low_open` / `high_open`.
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (self.high is not None and (value >= self.high if self.high_open else value > self.high))

    def __str__(self) -> str:
        if self.low is not None and self.high is not None:
            return f"{'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        return f"{'<' if self.high_open else '<='} {self.high:g}" if self.high is not None else 'any'


POSITIVE = Range(0, low_open=True)
AT_LEAST_1 = Range(1)
AT_LEAST_2 = Range(2)
NON_NEGATIVE = Range(0)
FRACTION = Range(0, 1)
SEED = Range(0)


def setting(default: Any, help: str, *, choices: tuple = (), range: Range | str | None = None) -> Any:
    """A settings field: its default, a one-line description and its allowed values.

    Args:
      choices: the allowed values of an enum setting.
      range: the allowed numbers (a `Range`; for a tuple, of each element), or, for values that
        only the model, the data or other keys can check (unit names, class indices, pairs), a
        short text saying what they must be (checked by the group's `validate` or, for analyses,
        `check_model` / `check_data`).
    Every field states `choices` or `range`, except booleans (tests/schema_test.py checks it).
    """
    return dataclasses.field(default=default, metadata={'help': help, 'choices': tuple(choices), 'range': range})


def freeze(value):
    """Lists (JSON, command line) become tuples, recursively, so settings are hashable."""
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    return value


def field_type(cls: type, field: dataclasses.Field) -> tuple[type, bool]:
    """(the field's value type, whether None is allowed), from its annotation."""
    hint = typing.get_type_hints(cls)[field.name]
    args = [t for t in typing.get_args(hint) if t is not type(None)]
    optional = len(args) < len(typing.get_args(hint))
    base = args[0] if args and optional else hint
    return typing.get_origin(base) or base, optional


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _type_ok(kind: type, value) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return _is_number(value)
    return isinstance(value, kind) if isinstance(kind, type) else True


def check_field(cls: type, field: dataclasses.Field, value: Any, key: str) -> None:
    """Checks one setting's value against its declared type, choices and range.

    Raises:
      ConfigError: one line naming `key.field=value`, what is allowed and the fix.
    """
    name = f'{key}.{field.name}'
    kind, optional = field_type(cls, field)
    choices, valid = field.metadata.get('choices') or (), field.metadata.get('range')
    if value is None:
        if optional:
            return
        raise ConfigError(f'{name}=None is not allowed; give a value (default {field.default!r})')
    if choices:
        if value not in choices:
            raise ConfigError(f"{name}={value!r} is not one of {', '.join(map(str, choices))}; "
                              f"set --config.{name}=<one of them>")
        return
    if not _type_ok(kind, value):
        article = 'an' if kind.__name__[0] in 'aeiou' else 'a'
        raise ConfigError(f'{name}={value!r} must be {article} {kind.__name__}{" or None" if optional else ""} '
                          f'(default {field.default!r}); set --config.{name}=<one>')
    if isinstance(valid, Range):
        numbers = value if isinstance(value, tuple) else (value,)
        for number in numbers:
            if not _is_number(number) or not math.isfinite(number) or number not in valid:
                what = 'each value' if isinstance(value, tuple) else 'it'
                raise ConfigError(f'{name}={value!r}: {what} must be {valid}; set --config.{name}=<a value in range>')


class Settings:
    """Base of every group of config keys (see the module doc).

    Class attributes:
      KEY: the config node, e.g. 'train' or 'analysis.cka'.
      SMOKE: {field: value} of the smoke variant (a run of seconds on a CPU), where the config's value is too
        big; a value may be a function (node, config) -> value of the config's current values.
    """

    KEY: ClassVar[str] = ''
    SMOKE: ClassVar[dict] = {}

    @classmethod
    def path(cls) -> str:
        """The node's dotted path in the config ('train', 'analysis.cka')."""
        return cls.KEY

    @classmethod
    def defaults(cls) -> dict:
        return {f.name: f.default for f in dataclasses.fields(cls)}

    @classmethod
    def config_node(cls) -> ConfigDict:
        """The config node of this group: its defaults (None as typed placeholders)."""
        def value(field):
            if field.default is not None:
                return field.default
            kind, _ = field_type(cls, field)
            return placeholder(kind)
        return ConfigDict({f.name: value(f) for f in dataclasses.fields(cls)})

    @classmethod
    def from_config(cls, node, key: str | None = None) -> 'Settings':
        """The settings of a config node (ConfigDict or dict), every field checked (`check_field`),
        then `validate`. Missing keys take their defaults."""
        key = key or cls.path()
        values = node.to_dict() if hasattr(node, 'to_dict') else dict(node or {})
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ConfigError(f"unknown key {key}.{unknown[0]}; the keys of {key} are: {', '.join(fields)}")
        values = {name: freeze(value) for name, value in values.items()}
        for name, value in values.items():
            check_field(cls, fields[name], value, key)
        settings = cls(**values)
        settings.validate()
        return settings

    @classmethod
    def apply_smoke(cls, config: ConfigDict) -> None:
        """Sets this group's node of `config` to its SMOKE values, in place."""
        node = config
        for part in cls.path().split('.'):
            node = node[part]
        for name, value in cls.SMOKE.items():
            node[name] = value(node, config) if callable(value) else value

    def error(self, field: str, message: str) -> ConfigError:
        """A ConfigError starting with `<path>.field=value` followed by `message`."""
        return ConfigError(f'{self.path()}.{field}={getattr(self, field)!r} {message}')

    def validate(self) -> None:
        """Raises ConfigError (one line: key, bad value, the fix) for bad relations between fields."""

    @classmethod
    def markdown_table(cls, title: str) -> str:
        """The README table of this group: key, default, allowed values, meaning."""
        lines = [title, '', '| key | default | allowed | meaning |', '|---|---|---|---|']
        for field in dataclasses.fields(cls):
            choices, valid = field.metadata.get('choices') or (), field.metadata.get('range')
            allowed = ' / '.join(map(str, choices)) if choices else (str(valid) if valid is not None else
                                                                     ('True / False' if field_type(cls, field)[0]
                                                                      is bool else ''))
            lines.append(f"| `{field.name}` | `{field.default!r}` | {allowed} | {field.metadata.get('help', '')} |")
        return '\n'.join(lines) + '\n'
