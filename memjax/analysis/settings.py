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
from typing import Callable

import jax

from memjax.data.facts import DataFacts
from memjax.engine import processes
from memjax.engine.lifting import Lifting, choose
from memjax.errors import ConfigError
from memjax.schema import AT_LEAST_1, AT_LEAST_2, FRACTION, NON_NEGATIVE, POSITIVE, SEED, Range, Settings, setting

# What an analysis module imports from here: its base class, the context, and the schema's field and ranges.
__all__ = ['AnalysisSettings', 'Context', 'setting', 'Range', 'AT_LEAST_1', 'AT_LEAST_2', 'FRACTION',
           'NON_NEGATIVE', 'POSITIVE', 'SEED']


class AnalysisSettings(Settings):
    """Base of the analyses' settings (`config.analysis.<KEY>`); subclasses add fields and may override
    the checks, which all run at start-up before anything is trained or written:

      - every field against its declared type, choices and range (`memjax.schema.check_field`);
      - `validate()`: relations between fields of this Settings;
      - `check_config(config)`: relations with the training keys (e.g. a record training must write);
      - `check_model(model)`: unit and stage names against the architecture;
      - `check_workdir(workdir, config)`: against the work directory and other directories it names;
      - `check_data(data)`: against the data set, right after it loads (class indices, example counts).
    """

    @classmethod
    def path(cls) -> str:
        return f'analysis.{cls.KEY}'

    @classmethod
    def from_config(cls, node, key: str = '') -> 'AnalysisSettings':
        return super().from_config(node, f'analysis.{key}' if key else cls.path())

    def check_config(self, config) -> None:
        """Raises ConfigError when the settings need something the run's training keys do not give."""

    def check_model(self, model) -> None:
        """Raises ConfigError for stage or layer names the model lacks; nothing by default."""

    def check_workdir(self, workdir: str, config) -> None:
        """Raises ConfigError for values that conflict with the run's work directory or other
        directories (other runs, kept folders); run at start-up, before training. Nothing by default."""

    def check_data(self, data: DataFacts) -> None:
        """Raises ConfigError for values the run's data cannot satisfy (class indices, example counts)."""

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
      strategy: `train.strategy` of this invocation: how analyses lift their models (`lifting`).
      cache: computations shared between analyses of one invocation.
      log: where progress lines go.
      output: the folder the analysis writes its results into (renamed to
        results/<name>/ when it completes).
      figures: the folder its figures go into (moved into figures/ on completion).
      across_processes: the analysis spreads its models over the devices of every process of a job
        (its module says `ACROSS_PROCESSES = True`); otherwise each process computes it whole on its own
        devices and process 0 writes it.
    """

    listed: tuple = ()
    shared: dict = dataclasses.field(default_factory=dict)
    strategy: str = 'auto'
    cache: dict = dataclasses.field(default_factory=dict)
    log: Callable[[str], None] = print
    output: str = ''
    figures: str = ''
    across_processes: bool = False

    def lifting(self, size: int) -> Lifting:
        """How `size` models (replicas, stitches, units) are lifted: `train.strategy` resolved on this
        machine (`memjax.engine.lifting.choose`); in a job of several processes, sharded over every
        process's devices when the analysis goes across processes and `size` splits evenly, else over
        this process's devices."""
        if not processes.several():
            return choose(self.strategy, size)[0]
        if self.across_processes and size % jax.device_count() == 0:
            return choose('shard', size)[0]
        return choose(self.strategy, size, local=True)[0]

    def progress(self, total: int, description: str):
        """A progress bar with an ETA on stderr (hidden when stderr is not a terminal)."""
        from tqdm.auto import tqdm
        return tqdm(total=total, desc=description, leave=False, dynamic_ncols=True, disable=None,
                    file=sys.stderr)
