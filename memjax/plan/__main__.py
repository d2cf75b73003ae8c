"""`python -m memjax.plan --config=configs/<name>.py [--accelerator=h100] [--json=plan.json]`: know the cost first.

Compiles every program the config will run (its training step under the
planned lifting, its evaluation, and the main program of every listed
analysis) ahead of time from abstract shapes, without data, and prints one row
per program: FLOPs and bytes per call (XLA's cost analysis), peak memory
(XLA's memory analysis), how often it runs, a roofline time on the named
accelerator and whether it fits; then totals per analysis and for the config.

Exit status: 0 every program fits; 1 something does not (each named with its
fix); 2 bad input (config, key, value or accelerator).
"""

from __future__ import annotations

import json
import sys

from absl import flags
from ml_collections import config_flags

from memjax.errors import MemjaxError
from memjax.plan.accelerators import NAMES, accelerator
from memjax.plan.report import make_plan

# Its own flags (not absl's global FLAGS, which `memjax.main` fills in the same process, e.g. in a notebook).
_FLAGS = flags.FlagValues()
_CONFIG = config_flags.DEFINE_config_file('config', None, 'Path to a config file (configs/*.py).', lock_config=True,
                                          flag_values=_FLAGS)
_ACCELERATOR = flags.DEFINE_string('accelerator', 'h100', f'the chip planned for: one of {", ".join(NAMES)}',
                                   flag_values=_FLAGS)
_JSON = flags.DEFINE_string('json', None, 'also write the plan as JSON to this file', flag_values=_FLAGS)
_ONLY = flags.DEFINE_list('only', [], "sections to plan (e.g. training,neurons; empty: all)", flag_values=_FLAGS)

EXIT_MISFIT, EXIT_INPUT = 1, 2


def _fail(message: str) -> None:
    print(f'memjax: error: {message}', file=sys.stderr)
    sys.exit(EXIT_INPUT)


def entry(argv: list[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    try:
        _FLAGS(argv)
        if _CONFIG.value is None:
            _fail('--config is required, e.g. --config=configs/cifar10_r18.py')
        config = _CONFIG.value
        config.to_dict()
    except SystemExit:
        raise
    except Exception as error:  # a config file or override that does not parse
        _fail(f'bad command line: {str(error).splitlines()[0] if str(error) else type(error).__name__}')
    try:
        chip = accelerator(_ACCELERATOR.value)
    except ValueError as error:
        _fail(str(error))
    name = _FLAGS['config'].config_filename
    try:
        plan = make_plan(config, chip, name, tuple(_ONLY.value))
    except MemjaxError as error:
        _fail(str(error))
    print(plan.text())
    if _JSON.value:
        with open(_JSON.value, 'w') as f:
            json.dump(plan.to_dict(), f, indent=1)
    return EXIT_MISFIT if plan.misfits else 0


if __name__ == '__main__':
    sys.exit(entry())
