"""The Colab notebooks' one entry point: load a config (with its variant and overrides), get the data,
train, analyse.

The notebooks in colab/ hold no logic; they call these and display what
`memjax.report.notebook` reads back from the run directory:

    from memjax import notebook
    config = notebook.load_config('configs/cifar10_r18.py', 'smoke', {'train.epochs': 3})
    print(notebook.prepare_data(config, source='raw', data_dir='/content/data'))
    workdir = notebook.run_experiment(config, workdir)

`run_experiment` is `python -m memjax.main` in-process: it checks the whole
config, trains (resuming an interrupted run in the same work directory), writes
the summary and runs the listed analyses (each analysis already finished is
skipped on a rerun).
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import time
from typing import Callable

import ml_collections

from memjax.data.download import download_raw
from memjax.errors import ConfigError
from memjax.main import _quiet_third_party_logs, run
from memjax.report.notebook import (csv_text, default_workdir, device_summary, metrics_text, result_tables,  # noqa: F401
                                    run_figures, summary_table)

REPOSITORY_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def config_path(name: str) -> str:
    """A config file by path, or by name ('cifar10_r18', 'configs/cifar10_r18.py') in this checkout's configs/.

    pip installs memjax without configs/, so a notebook that installed it passes
    the path of a cloned checkout (or keeps the repository's own when run from it).
    """
    if os.path.exists(name):
        return name
    base = os.path.basename(name)
    candidate = os.path.join(REPOSITORY_ROOT, 'configs', base if base.endswith('.py') else base + '.py')
    if os.path.exists(candidate):
        return candidate
    raise ConfigError(f'config file {name!r} not found (nor {candidate}); pass the path of a configs/*.py file')


def _check_type(name: str, value, kinds: tuple, example: str) -> None:
    if not isinstance(value, kinds):
        wanted = ' or '.join('None' if k is type(None) else k.__name__ for k in kinds)
        raise ConfigError(f'{name}={value!r} must be {wanted}, e.g. {example}')


def split_variant(config: str, variant: str | None = None) -> tuple[str, str | None]:
    """('configs/x.py', 'smoke') from 'configs/x.py:smoke' (an explicit `variant` wins)."""
    _check_type('config', config, (str,), "'configs/default.py' or 'configs/default.py:smoke'")
    _check_type('variant', variant, (str, type(None)), "'smoke'")
    if ':' in config:
        config, named = config.split(':', 1)
        variant = variant or named or None
    return config, variant


def workdir_for(config: str, variant: str | None = None, workdir: str | None = None) -> str:
    """`workdir`, or the default for the config file and variant: `default_workdir('<name>[_<variant>]')`
    (a variant given as 'configs/x.py:smoke' counts: the smoke run never shares the full run's directory)."""
    _check_type('workdir', workdir, (str, type(None)), "'runs/my_run'")
    config, variant = split_variant(config, variant)
    if workdir:
        return workdir
    name = os.path.splitext(os.path.basename(config))[0]
    return default_workdir(name + (f"_{variant.replace(',', '_')}" if variant else ''))


def mount_drive(mountpoint: str = '/content/drive') -> str:
    """Mounts Google Drive on Colab (asks for access once) so run directories outlive the runtime."""
    try:
        from google.colab import drive
    except ImportError:
        return 'not on Colab: run directories stay on this machine'
    drive.mount(mountpoint)
    return f'Google Drive mounted at {mountpoint}: runs go to {default_workdir("<config>")}'


def load_config(path: str, variant: str | None = None, overrides: dict | None = None) -> ml_collections.ConfigDict:
    """The config of `path` ('configs/x.py' or 'configs/x.py:variant'), as `--config=path:variant` loads it,
    with dotted overrides applied as `--config.a.b=v` would be (type-checked).

    Raises:
      ConfigError: unknown file, variant or key, a value of the wrong type, or arguments of the wrong type.
    """
    path, variant = split_variant(path, variant)
    _check_type('overrides', overrides, (dict, type(None)), "{'train.epochs': 5}")
    path = config_path(path)
    spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if variant and not inspect.signature(module.get_config).parameters:
        raise ConfigError(f'unknown config variant {variant!r}: {path} has no variants (its get_config takes none)')
    config = module.get_config(variant) if variant else module.get_config()
    for key, value in (overrides or {}).items():
        _check_type('an override key', key, (str,), "'train.epochs'")
        node, *parts = [config, *key.split('.')]
        for part in parts[:-1]:
            if part not in node:
                raise ConfigError(f'unknown config key {key!r}')
            node = node[part]
        if parts[-1] not in node:
            raise ConfigError(f'unknown config key {key!r}')
        try:
            node[parts[-1]] = tuple(value) if isinstance(value, list) else value
        except TypeError as error:
            raise ConfigError(f'bad value for {key}: {error}') from error
    return config


def prepare_data(config: ml_collections.ConfigDict, source: str | None = None,
                 data_dir: str | None = None, base_url: str | None = None) -> str:
    """Sets where the config's data comes from and fetches it if needed; returns a one-line report.

    source: 'raw' downloads the original files (CIFAR's python tarball) into
    data_dir unless already there; 'tfds' uses a prepared tfds data_dir;
    'synthetic' or None keeps the config's own source (the smoke variants are
    synthetic). The config is changed in place (data.source, data.data_dir).
    """
    source = source or config.data.source
    if source == 'synthetic':
        config.data.source = 'synthetic'
        return f'data: synthetic {tuple(config.data.image_shape)} images, generated in memory (no download)'
    config.data.source = source
    if data_dir:
        config.data.data_dir = data_dir
    if source == 'raw':
        if not config.data.data_dir:
            raise ConfigError("source='raw' needs a data_dir to download into, e.g. '/content/data'")
        return download_raw(config.data.name, config.data.data_dir, base_url)
    if source == 'tfds':
        return f'data: tfds {config.data.name} prepared in {config.data.data_dir or "~/tensorflow_datasets"}'
    raise ConfigError(f"data source {source!r} is not one of raw, tfds, synthetic")


def run_experiment(config: ml_collections.ConfigDict | str, workdir: str | None = None,
                   variant: str | None = None, overrides: dict | None = None,
                   log: Callable[[str], None] = print, rerun: tuple = ()) -> str:
    """Checks, trains (or resumes), writes the summary and runs the analyses; returns the work directory.

    `config` is a ConfigDict or a path (then loaded with `variant` and
    `overrides`). With several local devices and train.strategy='auto' the
    replicas are sharded over them ('shard'). workdir None: `default_workdir`
    of the config's name (Google Drive when mounted). Analyses already done with the
    same settings are skipped; `rerun` names analyses (or 'all') to redo.
    """
    import jax
    if isinstance(config, str):
        workdir = workdir_for(config, variant, workdir)
        config = load_config(config, variant, overrides)
    elif not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(f'config={config!r} must be a config path or a ConfigDict from load_config')
    elif workdir is None:
        raise ConfigError('run_experiment needs a workdir with a ConfigDict config')
    if config.train.strategy == 'auto' and jax.local_device_count() > 1:
        config.train.strategy = 'shard'
    _quiet_third_party_logs(False)
    start = time.time()
    log(f'memjax: {jax.local_device_count()} {jax.default_backend()} device(s), strategy '
        f'{config.train.strategy}, work directory {os.path.abspath(workdir)}')
    run(config, workdir, log, rerun)
    log(f'memjax: done in {time.time() - start:.0f} s; rerun this cell to resume after an interruption')
    return workdir
