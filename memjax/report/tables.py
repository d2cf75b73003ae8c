"""Plain-text and CSV tables (readable without code)."""

from __future__ import annotations

import csv
import io
from typing import Sequence

from memjax.rundir import write_text


def format_value(value) -> str:
    if value is None:
        return '-'
    if isinstance(value, float):
        return f'{value:.3f}'
    return str(value)


def text_table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """A fixed-width table of `rows` (dicts) with the given column order."""
    cells = [[format_value(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) if cells else len(c) for i, c in enumerate(columns)]
    lines = ['  '.join(c.rjust(w) for c, w in zip(columns, widths))]
    lines.append('  '.join('-' * w for w in widths))
    lines += ['  '.join(v.rjust(w) for v, w in zip(r, widths)) for r in cells]
    return '\n'.join(lines)


def write_csv(path: str, rows: Sequence[dict], columns: Sequence[str]) -> None:
    """Writes `rows` (dicts; None as an empty cell) with the given columns, atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction='ignore')
    writer.writeheader()
    for row in rows:
        writer.writerow({c: ('' if row.get(c) is None else row.get(c)) for c in columns})
    write_text(path, buffer.getvalue())
