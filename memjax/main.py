"""Command line: `python -m memjax.main --config=configs/<name>.py [--workdir=DIR] [--config.x.y=v]`.

Checks the whole config (training keys and every listed analysis's settings),
trains the run of the config in the work directory (resuming it if it was
interrupted), writes and prints its summary table, then runs the analyses the
config lists. Every failure a user can cause prints one `memjax: error:` line;
`--verbosity=debug` (or any --verbosity >= 1) adds the traceback and
third-party logs.

Several processes (hosts of a TPU pod slice, SLURM tasks, local CPU processes)
run the same command with `--coordinator_address`, `--num_processes` and
`--process_id` (or none of them where JAX detects the cluster), see
`memjax.engine.processes`: every process checks the config and loads the data,
and one process's bad input stops all of them, each with one line naming it.

Exit status:
  0  done;
  2  bad input: config file, key or value, data, or a work directory that holds
     something else, is damaged, or is locked by another memjax process;
  3  a replica diverged (non-finite loss or parameters): the others trained,
     analyses were not run;
  4  the file system failed (read-only, full, name too long, not a directory);
  5  another process of the job stopped or became unreachable (a collective failed); rerun every
     process with the same command to resume;
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

# The job's processes (read before the other flags, so that a bad command line on one process stops all).
_PROCESS_FLAGS = flags.FlagValues()
flags.DEFINE_string('coordinator_address', None, 'host:port of process 0 in a job of several processes '
                    '(jax.distributed.initialize); with none of the three, a cluster JAX detects, else one process.',
                    flag_values=_PROCESS_FLAGS)
flags.DEFINE_integer('num_processes', None, 'How many processes the job has.', flag_values=_PROCESS_FLAGS)
flags.DEFINE_integer('process_id', None, 'This process: 0 .. num_processes - 1 (0 writes the run directory).',
                     flag_values=_PROCESS_FLAGS)
flags.DEFINE_float('process_timeout', 600, 'Seconds any wait for another process may take (start-up, '
                   'barriers) before this one stops with one line.', flag_values=_PROCESS_FLAGS)
flags.DEFINE_integer('heartbeat_timeout', 60, 'Seconds after which a silent process counts as dead and '
                     'the others stop.', flag_values=_PROCESS_FLAGS)
for _name in _PROCESS_FLAGS:
    flags.DEFINE_flag(_PROCESS_FLAGS[_name])  # also known to the main parse (the values are read from the first)

EXIT_INPUT, EXIT_DIVERGED, EXIT_FILESYSTEM, EXIT_PROCESS, EXIT_INTERRUPTED = 2, 3, 4, 5, 130


def default_workdir(config_path: str) -> str:
    name = os.path.splitext(os.path.basename(config_path.split(':')[0]))[0]
    return os.path.join('runs', name)


def run(config, workdir: str, log=print, rerun=()) -> None:
    """Check, lock, train, summarise, analyse (skipping analyses done with the same settings, except `rerun`)."""
    from memjax.analysis.registry import check_data
    from memjax.analysis.runner import check_rerun, run_analyses
    from memjax.engine import processes
    from memjax.experiment import check
    from memjax.report.summary import write_summary
    from memjax.train.faults import from_environment
    from memjax.train.loop import train

    with processes.together('checking the config'):
        settings = check(config, workdir)
        check_rerun(rerun, tuple(config.analyses))
    if processes.primary():
        log(start_line(config))
    directory = train(config, workdir, log, check_data=lambda facts: check_data(settings, facts),
                      faults=from_environment())  # locks once the data has loaded and passed the data checks
    processes.barrier('training done')
    with directory.locked():
        if processes.primary():
            log(write_summary(directory))
        diverged = directory.status().get('diverged') or []
        if diverged:
            raise DivergedError(f"{', '.join(diverged)} diverged (non-finite loss or parameters); the other "
                                "replicas trained, analyses were not run: lower train.learning_rate and train "
                                "in a new --workdir")
        run_analyses(config, workdir, log, settings, rerun)


def start_line(config) -> str:
    """What the command is about to do, and how long it took on the config's reference machine."""
    ratios, seeds, train = tuple(config.noise.ratios), tuple(config.seeds), config.train
    analyses = tuple(config.analyses)
    line = (f'memjax: {len(ratios) * len(seeds)} replicas of {config.model.name} on {config.data.name}, up to '
            f'{train.epochs} epochs, then {len(analyses)} analyses ({", ".join(analyses) or "none"})')
    reference = tuple(train.get('reference_time', ()) or ())
    if reference:
        line += (f'; about {reference[1] / 60:.1f} min on the reference machine (see the config), this '
                 "machine's estimate follows epoch 1")
    return line


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
    import warnings
    quiet = lambda *args: None
    threading.excepthook = sys.excepthook = sys.unraisablehook = quiet
    warnings.simplefilter('ignore')  # e.g. orbax's write coroutines "never awaited" at exit
    sys.stderr.flush()
    os.dup2(os.open(os.devnull, os.O_WRONLY), 2)  # and whatever native code prints while the process ends


def _fail(message: str, status: int, debug: bool, tell_others: bool = True) -> None:
    from memjax.engine import processes
    if debug:
        traceback.print_exc()
    print(f'memjax: error: {message}', file=sys.stderr)
    sys.stderr.flush()
    if tell_others:
        processes.fail(message, status)  # the other processes stop at their next barrier, naming this one
    if processes.several():  # not JAX's shutdown barrier, which the other processes may never reach
        sys.stdout.flush()
        os._exit(status)
    if not debug:
        _silence_after_failure()
    sys.exit(status)


def _start_processes(argv: list[str], debug: bool) -> None:
    """Joins the job's processes (a no-op for one) before anything that can fail on bad input."""
    from memjax.engine import processes
    try:
        _PROCESS_FLAGS(argv, known_only=True)
        values = {name: _PROCESS_FLAGS[name].value for name in _PROCESS_FLAGS}
        processes.start(values['coordinator_address'], values['num_processes'], values['process_id'],
                        timeout=values['process_timeout'], heartbeat_timeout=values['heartbeat_timeout'])
    except processes.ProcessError as error:
        _fail(str(error), EXIT_INPUT, debug, tell_others=False)
    except Exception as error:  # a process flag that does not parse
        _fail(f'bad command line: {_one_line(error)}', EXIT_INPUT, debug, tell_others=False)
    if processes.several() and not debug:
        processes.quiet_native_errors()


def _parse(argv: list[str]):
    """The config of the command line; ConfigError (one line) when it does not parse."""
    from memjax.errors import ConfigError
    try:
        flags.FLAGS(argv)
        if _CONFIG.value is None:
            raise ConfigError('--config is required, e.g. --config=configs/default.py')
        config = _CONFIG.value
        config.to_dict()  # the file is loaded lazily: fail here, as bad input, if it does not load
        return config
    except (ConfigError, SystemExit):
        raise
    except Exception as error:  # config file or override that does not parse
        raise ConfigError(_unknown_key(argv, error) or f'bad command line: {_one_line(error)}') from error


def _unknown_key(argv: list[str], error: BaseException) -> str | None:
    """The one line for an override that names no key: which flag, and the keys its group has."""
    import re
    match = re.search(r"'([A-Za-z_][A-Za-z0-9_]*)'", _one_line(error))
    if not match:
        return None
    key = match.group(1)
    for arg in argv:
        name = arg.split('=', 1)[0]
        if name.startswith('--config.') and name.endswith('.' + key):
            group = name[len('--config.'):-len(key) - 1]
            hint = ''
            path = next((a.split('=', 1)[1].split(':')[0] for a in argv if a.startswith('--config=')), '')
            try:  # the config file without the overrides (as its module builds it)
                import importlib.util
                spec = importlib.util.spec_from_file_location('_memjax_config', path)
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
                node = module.get_config()
                for part in group.split('.'):
                    node = node[part]
                if hasattr(node, 'keys'):
                    hint = f" (the keys of {group}: {', '.join(sorted(node.keys()))})"
            except Exception:  # the file or the group does not load: the key alone is named
                pass
            text = _one_line(error)
            if 'Did you mean' in text:
                hint = ' ' + text[text.index('Did you mean'):].split('?')[0] + '?'
            return f'{name} names no key: {group} has no {key!r}{hint}'
    return None


def entry(argv: list[str] | None = None) -> None:
    from memjax.engine import processes
    argv = list(sys.argv if argv is None else argv)
    debug = any(a in ('--verbosity=debug', '-v=debug') for a in argv)
    argv = ['--verbosity=1' if a in ('--verbosity=debug', '-v=debug') else a for a in argv]
    _start_processes(argv, debug)
    try:
        with processes.together('reading the command line'):
            config = _parse(argv)
    except processes.ProcessError as error:
        _fail(str(error), error.status, debug, tell_others=False)
    except MemjaxError as error:
        _fail(str(error), EXIT_INPUT, debug)
    debug = debug or flags.FLAGS.verbosity >= 1
    _quiet_third_party_logs(debug)
    workdir = _WORKDIR.value or default_workdir(flags.FLAGS['config'].config_filename)
    try:
        run(config, workdir, rerun=_RERUN.value)
        processes.barrier('finishing')
    except processes.ProcessError as error:
        _fail(str(error), error.status, debug, tell_others=False)
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
    except Exception as error:
        if not processes.several():
            raise
        _fail(f'process {processes.index()}: a computation shared with the other processes failed '
              f'({_one_line(error)[:160]}); another process stopped? rerun every process with the same command '
              'to resume', EXIT_PROCESS, debug)


if __name__ == '__main__':
    entry()
