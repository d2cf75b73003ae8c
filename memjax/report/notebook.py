"""What a notebook shows of a run directory: device, summary, figures, result tables.

Readers only (the Colab notebooks in colab/ call these and display the
results; `memjax.notebook` trains and analyses). No pandas: tables come back
as aligned text.
"""

from __future__ import annotations

import csv
import glob
import os

from memjax.report.tables import text_table
from memjax.rundir import RunDirectory

DRIVE_ROOT = '/content/drive/MyDrive'  # where Colab mounts Google Drive


def device_summary() -> str:
    """'backend: tpu, 1 device(s): TPU v5 lite' (what the runtime will train on)."""
    import jax
    devices = jax.devices()
    kinds = sorted({d.device_kind for d in devices})
    return f"backend: {jax.default_backend()}, {len(devices)} device(s): {', '.join(kinds)}"


def default_workdir(name: str, drive_root: str = DRIVE_ROOT, local_root: str = 'runs') -> str:
    """`<Drive>/memjax_runs/<name>` when Google Drive is mounted (a runtime reset resumes from it),
    else `runs/<name>` on the runtime's own disk."""
    if os.path.isdir(drive_root):
        return os.path.join(drive_root, 'memjax_runs', name)
    return os.path.join(local_root, name)


def summary_table(workdir: str) -> str:
    """The run's final table (summary.txt, written after training)."""
    path = os.path.join(workdir, 'summary.txt')
    if not os.path.exists(path):
        raise FileNotFoundError(f'{path} does not exist: the run in {workdir} has not finished training')
    with open(path) as f:
        return f.read()


def run_figures(workdir: str, names: tuple[str, ...] = ()) -> list[str]:
    """Paths of the run's figures (figures/*.png), sorted by name; `names`: only these (file stems)."""
    paths = sorted(glob.glob(os.path.join(workdir, 'figures', '*.png')))
    if names:
        paths = [p for p in paths if os.path.splitext(os.path.basename(p))[0] in names]
    return paths


METRIC_COLUMNS = ('epoch', 'replica', 'noise_ratio', 'train_accuracy', 'memorization_accuracy', 'test_accuracy')


def metrics_text(workdir: str, columns: tuple[str, ...] = METRIC_COLUMNS, last_epochs: int = 3) -> str:
    """The training metrics of the last `last_epochs` epochs (metrics.jsonl) as a text table."""
    rows = RunDirectory(workdir).read_metrics()
    if not rows:
        return '(no epochs recorded yet)'
    epochs = sorted({row['epoch'] for row in rows})[-last_epochs:]
    return text_table([row for row in rows if row['epoch'] in epochs], columns)


def result_tables(workdir: str) -> dict[str, str]:
    """{'<analysis>/<table>.csv': path} for every table the analyses wrote under results/."""
    root = os.path.join(workdir, 'results')
    paths = sorted(glob.glob(os.path.join(root, '*', '*.csv')))
    return {os.path.relpath(p, root): p for p in paths}


def csv_text(path: str, max_rows: int = 20, columns: list[str] | None = None) -> str:
    """A CSV file as an aligned text table: its first `max_rows` rows (and how many were left out)."""
    with open(path, newline='') as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return '(empty table)'
    columns = list(columns or rows[0].keys())
    shown = [{k: _number(row.get(k)) for k in columns} for row in rows[:max_rows]]
    text = text_table(shown, columns)
    if len(rows) > max_rows:
        text += f'\n... {len(rows) - max_rows} more rows in {path}'
    return text


def _number(value):
    """CSV cells back to numbers where they are numbers (for format_value's rounding)."""
    if value is None or value == '':
        return value
    try:
        return float(value) if any(c in value for c in '.eE') else int(value)
    except ValueError:
        return value

