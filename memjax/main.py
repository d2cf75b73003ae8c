"""Command line: `python -m memjax.main --config=configs/<name>.py [--workdir=DIR] [--config.x.y=v]`.

Checks the whole config (training keys and every listed analysis's settings),
trains the run of the config in the work directory (resuming it if it was
interrupted), writes and prints its summary table, then runs the analyses the
config lists. Every failure a user can cause prints one `memjax: error:` line;
`--verbosity=debug` (or any --verbosity >= 1) adds the traceback and
third-party logs.

Exit status:
  0  done;
  2  bad input: config file, key or value, data, or a work directory that holds
     something else, is damaged, or is locked by another memjax process;
  3  a replica diverged (non-finite loss or parameters): the others trained,
     analyses were not run;
  4  the file system failed (read-only, full, name too long, not a directory);
  130  interrupted (Ctrl-C): rerun the same command to resume.
"""

from __future__ import annotations

import os
import sys
import traceback

from absl import flags, logging
from ml_collections import config_flags

from memjax.errors import DivergedError, FileSystemError, MemjaxError

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Path to a config file (configs/*.py).',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory; default runs/<config file name>.')
_RERUN = flags.DEFINE_list('rerun', [], 'Analyses to redo although their results are complete with the same '
                           'settings (names of config.analyses, or all).')

EXIT_INPUT, EXIT_DIVERGED, EXIT_FILESYSTEM, EXIT_INTERRUPTED = 2, 3, 4, 130


def default_workdir(config_path: str) -> str:
    name = os.path.splitext(os.path.basename(config_path.split(':')[0]))[0]
    return os.path.join('runs', name)


def run(config, workdir: str, log=print, rerun=()) -> None:
    """Check, lock, train, summarise, analyse (skipping analyses done with the same settings, except `rerun`)."""
    from memjax.analysis.registry import check_data
    from memjax.analysis.runner import check_rerun, run_analyses
    from memjax.experiment import check
    from memjax.report.summary import write_summary
    from memjax.train.faults import from_environment
    from memjax.train.loop import train

    settings = check(config, workdir)
    check_rerun(rerun, tuple(config.analyses))
    directory = train(config, workdir, log, check_data=lambda facts: check_data(settings, facts),
                      faults=from_environment())  # locks once the data has loaded and passed the data checks
    with directory.locked():
        log(write_summary(directory))
        diverged = directory.status().get('diverged') or []
        if diverged:
            raise DivergedError(f"{', '.join(diverged)} diverged (non-finite loss or parameters); the other "
                                "replicas trained, analyses were not run: lower train.learning_rate and train "
                                "in a new --workdir")
        run_analyses(config, workdir, log, settings, rerun)


def _one_line(error: BaseException) -> str:
    """The telling lines of an exception chain, joined (e.g. ml_collections' 'Did you mean ...')."""
    parts: list[str] = []
    while error is not None:
        text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
        if not (text[:1] in '\'"' and '\\n' in text):  # skip a repr of a nested message
            for line in text.splitlines():
                line = line.strip()
                if line and not any(line in part for part in parts):
                    parts.append(line)
        error = error.__cause__ or error.__context__
    return ' '.join(parts)[:400] or 'unknown error'


def _quiet_third_party_logs(debug: bool) -> None:
    """No third-party log noise at the default verbosity.

    orbax and absl warn about routine things, and orbax logs the errors of its
    background threads (a full disk) with tracebacks, before memjax reports the
    same failure in one line; threads that die while the process exits after
    such a failure would print theirs (see `_silence_after_failure`).
    """
    import logging as std_logging
    level = std_logging.DEBUG if debug else std_logging.CRITICAL
    logging.set_verbosity(logging.DEBUG if debug else logging.FATAL)
    for name in ('absl', 'orbax', 'jax', 'tensorflow', 'etils', 'asyncio'):
        std_logging.getLogger(name).setLevel(level)
    if not debug:
        sys.unraisablehook = _main_thread_only(sys.__unraisablehook__)


def _main_thread_only(hook):
    """An unraisable-exception hook that reports only the main thread's: when a write fails,
    tensorstore's threads report their callbacks into orbax's closed event loop through it, while the
    failure itself reaches the main thread, which reports it in one line."""
    import threading

    def unraisablehook(unraisable):
        if threading.current_thread() is threading.main_thread():
            hook(unraisable)
    return unraisablehook


def _silence_after_failure() -> None:
    """Once the failure is reported: the background threads of orbax and tensorstore that fail
    while the process exits (their event loop is closed) print nothing more."""
    import threading
    quiet = lambda *args: None
    threading.excepthook = sys.excepthook = sys.unraisablehook = quiet


def _fail(message: str, status: int, debug: bool) -> None:
    if debug:
        traceback.print_exc()
    print(f'memjax: error: {message}', file=sys.stderr)
    sys.stderr.flush()
    if not debug:
        _silence_after_failure()
    sys.exit(status)


def entry(argv: list[str] | None = None) -> None:
    argv = list(sys.argv if argv is None else argv)
    debug = any(a in ('--verbosity=debug', '-v=debug') for a in argv)
    argv = ['--verbosity=1' if a in ('--verbosity=debug', '-v=debug') else a for a in argv]
    try:
        flags.FLAGS(argv)
        debug = debug or flags.FLAGS.verbosity >= 1
        if _CONFIG.value is None:
            _fail('--config is required, e.g. --config=configs/default.py', EXIT_INPUT, False)
        config = _CONFIG.value
        config.to_dict()  # the file is loaded lazily: fail here, as bad input, if it does not load
    except SystemExit:
        raise
    except Exception as error:  # config file or override that does not parse
        _fail(f'bad command line: {_one_line(error)}', EXIT_INPUT, debug)
    _quiet_third_party_logs(debug)
    workdir = _WORKDIR.value or default_workdir(flags.FLAGS['config'].config_filename)
    try:
        run(config, workdir, rerun=_RERUN.value)
    except DivergedError as error:
        _fail(str(error), EXIT_DIVERGED, debug)
    except FileSystemError as error:
        _fail(str(error), EXIT_FILESYSTEM, debug)
    except MemjaxError as error:
        _fail(str(error), EXIT_INPUT, debug)
    except KeyboardInterrupt:
        _fail('interrupted; rerun the same command to resume', EXIT_INTERRUPTED, debug)
    except OSError as error:
        where = f' ({error.filename})' if getattr(error, 'filename', None) else ''
        _fail(f'file system: {error.strerror or error}{where}; check that --workdir={workdir} is a writable '
              'directory with free space and a short enough path', EXIT_FILESYSTEM, debug)


if __name__ == '__main__':
    entry()
