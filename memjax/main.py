"""Command line: `python -m memjax.main --config=configs/<name>.py [--workdir=DIR] [--config.x.y=v]`.

Trains the run of the config in the work directory (resuming it if it was
interrupted) and then runs the analyses the config lists. Errors in the input
print one line and exit with status 2, leaving the work directory untouched.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from memjax.errors import MemjaxError

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Path to a config file (configs/*.py).',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory; default runs/<config file name>.')


def default_workdir(config_path: str) -> str:
    name = os.path.splitext(os.path.basename(config_path.split(':')[0]))[0]
    return os.path.join('runs', name)


def run(config, workdir: str) -> None:
    from memjax.analysis.runner import check_analyses, run_analyses
    from memjax.train.loop import train

    check_analyses(config)
    train(config, workdir)
    run_analyses(config, workdir)


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    if _CONFIG.value is None:
        print('memjax: error: --config is required, e.g. --config=configs/default.py', file=sys.stderr)
        sys.exit(2)
    logging.set_verbosity(logging.WARNING)  # orbax logs every file it writes at INFO
    workdir = _WORKDIR.value or default_workdir(flags.FLAGS['config'].config_filename)
    try:
        run(_CONFIG.value, workdir)
    except MemjaxError as error:
        print(f'memjax: error: {error}', file=sys.stderr)
        sys.exit(2)


if __name__ == '__main__':
    app.run(main)
