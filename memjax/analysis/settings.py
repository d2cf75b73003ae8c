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
import sys
from typing import Any, Callable

from memjax.errors import ConfigError


def setting(default: Any, help: str, *, choices: tuple = ()) -> Any:
    """A settings field: its default, a one-line description and, for enums, the allowed values."""
    return dataclasses.field(default=default, metadata={'help': help, 'choices': tuple(choices)})


def _freeze(value):
    """Lists (JSON, command line) become tuples, recursively, so settings are hashable."""
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


class AnalysisSettings:
    """Base of the settings dataclasses; subclasses add fields and may override `validate`."""

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
        for name, value in values.items():
            choices = fields[name].metadata.get('choices') or ()
            if choices and value not in choices:
                raise ConfigError(f"analysis.{key}.{name}={value!r} is not one of {', '.join(map(str, choices))}; "
                                  f"set --config.analysis.{key}.{name}=<one of them>")
        settings = cls(**{name: _freeze(value) for name, value in values.items()})
        settings.validate()
        return settings

    def validate(self) -> None:
        """Raises ConfigError (one line: key, bad value, the fix) for bad values; nothing by default."""

    def check_model(self, model) -> None:
        """Raises ConfigError for stage or layer names the model lacks; nothing by default."""

    def check_workdir(self, workdir: str, config) -> None:
        """Raises ConfigError for values that conflict with the run's work directory or other
        directories (other runs, kept folders); run at start-up, before training. Nothing by default."""

    def positive(self, *names: str) -> None:
        """Checks that the named integer fields are positive."""
        for name in names:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"analysis.{self.KEY}.{name}={value!r} must be a positive integer")


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
