"""Prints (or, with --write, puts into README.md) the config key tables, generated from the Settings dataclasses:
the training keys (`memjax.config`) and the analysis keys (each analysis's Settings)."""

from __future__ import annotations

import pathlib
import re
import sys

from memjax.analysis.registry import markdown_tables
from memjax.config import GROUPS

README = pathlib.Path(__file__).resolve().parent.parent / 'README.md'


def training_tables() -> str:
    """The training key tables, one per group, and the replica seeds."""
    tables = [group.markdown_table(f'#### `{group.KEY}`') for group in GROUPS]
    return '\n'.join(tables) + '\n`seeds` (default `(0,)`): the replica seeds; the replicas are noise.ratios x seeds.\n'


BLOCKS = {'training-keys': training_tables, 'analysis-keys': markdown_tables}


def main() -> None:
    if '--write' not in sys.argv:
        for make in BLOCKS.values():
            print(make())
        return
    text = README.read_text()
    for name, make in BLOCKS.items():
        block = f'<!-- {name}:begin -->\n{make()}\n<!-- {name}:end -->'
        text, count = re.subn(rf'<!-- {name}:begin -->\n.*?<!-- {name}:end -->', lambda m: block, text, flags=re.S)
        if not count:
            sys.exit(f'README.md has no <!-- {name}:begin --> ... <!-- {name}:end --> markers')
    README.write_text(text)


if __name__ == '__main__':
    main()
