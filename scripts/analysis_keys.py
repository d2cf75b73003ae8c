"""Prints (or, with --write, puts into README.md) the analysis key tables, generated from the Settings dataclasses."""

from __future__ import annotations

import pathlib
import re
import sys

from memjax.analysis.registry import markdown_tables

README = pathlib.Path(__file__).resolve().parent.parent / 'README.md'


def main() -> None:
    tables = markdown_tables()
    if '--write' not in sys.argv:
        print(tables)
        return
    text = README.read_text()
    block = f'<!-- analysis-keys:begin -->\n{tables}\n<!-- analysis-keys:end -->'
    new, count = re.subn(r'<!-- analysis-keys:begin -->\n.*?<!-- analysis-keys:end -->', lambda m: block, text,
                         flags=re.S)
    if not count:
        sys.exit('README.md has no <!-- analysis-keys:begin --> ... <!-- analysis-keys:end --> markers')
    README.write_text(new)


if __name__ == '__main__':
    main()
