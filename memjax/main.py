"""Command line: `python -m memjax.main --config=configs/<name>.py [--workdir=DIR] [--config.x.y=v]`.

Checks the whole config (training keys and every listed analysis's settings),
trains the run of the config in the work directory (resuming it if it was
interrupted), writes and prints its summary table, then runs the analyses the
config lists. Errors in the input print one line and exit with status 2,
leaving the work directory untouched.
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


def run(config, workdir: str, log=print) -> None:
    """Check, train, summarise, analyse."""
    from memjax.analysis.runner import run_analyses
    from memjax.experiment import check
    from memjax.report.summary import write_summary
    from memjax.train.loop import train

    settings = check(config)
    directory = train(config, workdir, log)
    log(write_summary(directory))
    run_analyses(config, workdir, log, settings)


def quiet_third_party_logs() -> None:
    """No third-party log noise at the default verbosity (orbax and absl warn about routine things)."""
    if not flags.FLAGS['verbosity'].present:
        logging.set_verbosity(logging.ERROR)
        import logging as std_logging
        for name in ('absl', 'orbax', 'jax', 'tensorflow', 'etils'):
            std_logging.getLogger(name).setLevel(std_logging.ERROR)


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    if _CONFIG.value is None:
        print('memjax: error: --config is required, e.g. --config=configs/default.py', file=sys.stderr)
        sys.exit(2)
    quiet_third_party_logs()
    workdir = _WORKDIR.value or default_workdir(flags.FLAGS['config'].config_filename)
    try:
        run(_CONFIG.value, workdir)
    except MemjaxError as error:
        print(f'memjax: error: {error}', file=sys.stderr)
        sys.exit(2)


if __name__ == '__main__':
    app.run(main)
