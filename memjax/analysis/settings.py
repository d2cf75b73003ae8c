"""What every analysis shares: its settings base, the `setting` field and the run context.

An analysis is one module (see `memjax.analysis.registry`) with

    NAME = 'stitching'                   # as listed in config.analyses
    @dataclasses.dataclass(frozen=True)
    class Settings(AnalysisSettings):    # config.analysis.<NAME>; the ONLY place its defaults live
        epochs: int = setting(10, 'epochs of stitch-layer training')
    def run(run: Run, settings: Settings, context: Context) -> None

Fields are declared with `setting(default, help)`: the help line is what the
README's key tables print (they are generated from these dataclasses).
"""

from __future__ import annotations

import dataclasses
import math
import sys
import typing
from typing import Any, Callable

from memjax.data.facts import DataFacts
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
NON_NEGATIVE = Range(0)
FRACTION = Range(0, 1)
SEED = Range(0)


def setting(default: Any, help: str, *, choices: tuple = (), range: Range | str | None = None) -> Any:
    """A settings field: its default, a one-line description and its allowed values, declared once.

    Args:
      choices: the allowed values of an enum setting.
      range: the allowed numbers (a `Range`; of every element for a tuple), or, for values only the
        model, the data or other settings can check (unit names, class indices, pairs), a short text
        saying what they must be; the check is then `check_model`, `check_data` or `validate`.
    Every field states `choices` or `range`, except booleans (tests/settings_test.py checks it).
    """
    return dataclasses.field(default=default, metadata={'help': help, 'choices': tuple(choices), 'range': range})


def _freeze(value):
    """Lists (JSON, command line) become tuples, recursively, so settings are hashable."""
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def _field_type(cls: type, field: dataclasses.Field) -> tuple[type, bool]:
    """(the field's value type, whether None is allowed), from its annotation."""
    hint = typing.get_type_hints(cls)[field.name]
    args = [t for t in typing.get_args(hint) if t is not type(None)]
    optional = len(args) < len(typing.get_args(hint))
    base = args[0] if args else hint
    return typing.get_origin(base) or base, optional


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_field(cls: type, field: dataclasses.Field, value: Any, key: str) -> None:
    """Checks one setting's value against its declared type, choices and range; raises ConfigError."""
    name = f'analysis.{key}.{field.name}'
    kind, optional = _field_type(cls, field)
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
    wrong_type = ((kind is bool and not isinstance(value, bool)) or (kind is int and not (isinstance(value, int)
                  and not isinstance(value, bool))) or (kind is float and not _is_number(value))
                  or (kind is tuple and not isinstance(value, tuple)) or (kind is str and not isinstance(value, str)))
    if wrong_type:
        raise ConfigError(f'{name}={value!r} must be {"a " + kind.__name__ if kind is not int else "an int"}'
                          f'{" or None" if optional else ""} (default {field.default!r})')
    if isinstance(valid, Range):
        numbers = value if isinstance(value, tuple) else (value,)
        for number in numbers:
            if not _is_number(number) or not math.isfinite(number) or number not in valid:
                what = 'each value' if isinstance(value, tuple) else 'the value'
                raise ConfigError(f'{name}={value!r}: {what} must be {valid} (and finite); '
                                  f'set --config.{name}=<a value in range>')


class AnalysisSettings:
    """Base of the settings dataclasses; subclasses add fields and may override the checks.

    The checks, all run at start-up before anything is trained or written:
      - every field against its declared type, choices and range (`check_field`, generic);
      - `validate()`: relations between fields of this Settings;
      - `check_config(config)`: relations with the training keys (e.g. a record training must write);
      - `check_model(model)`: unit and stage names against the architecture;
      - `check_data(data)`: against the data set, right after it loads (class indices, example counts).
    """

    KEY = ''  # config.analysis.<KEY>; set by the registry

    @classmethod
    def defaults(cls) -> dict:
        return {f.name: f.default for f in dataclasses.fields(cls)}

    @classmethod
    def from_config(cls, node, key: str = '') -> 'AnalysisSettings':
        """Settings from an `analysis.<key>` node (ConfigDict or dict), checked field by field."""
        key = key or cls.KEY
        values = node.to_dict() if hasattr(node, 'to_dict') else dict(node or {})
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ConfigError(f"unknown key analysis.{key}.{unknown[0]}; the keys of analysis.{key} are: "
                              f"{', '.join(fields)}")
        values = {name: _freeze(value) for name, value in values.items()}
        for name, value in values.items():
            check_field(cls, fields[name], value, key)
        settings = cls(**values)
        settings.validate()
        return settings

    def error(self, field: str, message: str) -> ConfigError:
        """A ConfigError naming `analysis.<KEY>.<field>=<value>` followed by `message`."""
        return ConfigError(f'analysis.{self.KEY}.{field}={getattr(self, field)!r} {message}')

    def validate(self) -> None:
        """Raises ConfigError (one line: key, bad value, the fix) for bad relations between fields."""

    def positive(self, *names: str) -> None:
        """Checks that the named integer fields are positive."""
        for name in names:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"analysis.{self.KEY}.{name}={value!r} must be a positive integer")

    def check_config(self, config) -> None:
        """Raises ConfigError when the settings need something the run's training keys do not give."""

    def check_model(self, model) -> None:
        """Raises ConfigError for stage or layer names the model lacks; nothing by default."""

    def check_data(self, data: DataFacts) -> None:
        """Raises ConfigError for values the run's data cannot satisfy (class indices, example counts)."""


@dataclasses.dataclass
class Context:
    """What the runner gives every analysis besides the run and its settings.

    Attributes:
      listed: the analyses of this invocation, in order (an analysis may share
        a computation with another one listed, see `cache`).
      shared: validated settings of every analysis key, by key (e.g. 'cka').
      cache: computations shared between analyses of one invocation.
      log: where progress lines go.
      output: the folder the analysis writes its results into (renamed to
        results/<name>/ when it completes).
      figures: the folder its figures go into (moved into figures/ on completion).
    """

    listed: tuple = ()
    shared: dict = dataclasses.field(default_factory=dict)
    cache: dict = dataclasses.field(default_factory=dict)
    log: Callable[[str], None] = print
    output: str = ''
    figures: str = ''

    def progress(self, total: int, description: str):
        """A progress bar with an ETA on stderr (hidden when stderr is not a terminal)."""
        from tqdm.auto import tqdm
        return tqdm(total=total, desc=description, leave=False, dynamic_ncols=True, disable=None,
                    file=sys.stderr)
