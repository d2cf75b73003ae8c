"""Runs the analyses a config lists (`config.analyses`) on a trained run."""

from __future__ import annotations

from typing import Callable

from memjax.errors import ConfigError

# name -> run(run_directory_path, analysis_config, log)
ANALYSES: dict[str, Callable] = {}


def run_analyses(config, workdir: str, log: Callable[[str], None] = print) -> None:
    for name in config.analyses:
        if name not in ANALYSES:
            raise ConfigError(f"unknown analysis {name!r} in config.analyses; available: "
                              f"{', '.join(sorted(ANALYSES)) or 'none yet'}")
    for name in config.analyses:
        ANALYSES[name](workdir, config.analysis.get(name), log)
