"""The live per-epoch line and the final summary table of a training run."""

from __future__ import annotations

from memjax.report.tables import format_value, text_table, write_csv
from memjax.rundir import RunDirectory

SUMMARY_COLUMNS = ('replica', 'noise_ratio', 'seed', 'epoch', 'converged_epoch', 'train_accuracy',
                   'clean_accuracy', 'memorization_accuracy', 'noisy_true_accuracy', 'val_accuracy',
                   'test_accuracy')


def _values(rows: list[dict], key: str) -> str:
    values = [row.get(key) for row in rows]
    if len(values) > 6:
        present = [v for v in values if v is not None]
        return f'{min(present):.2f}..{max(present):.2f}' if present else '-'
    return '/'.join('-' if v is None else f'{v:.2f}' for v in values)


def epoch_line(epoch: int, epochs: int, rows: list[dict], seconds: float) -> str:
    """One line per epoch: values per replica in replica order (or min..max beyond 6)."""
    return (f'epoch {epoch:3d}/{epochs} {seconds:6.1f}s | loss {_values(rows, "train_loss")} | '
            f'train {_values(rows, "train_accuracy")} | mem {_values(rows, "memorization_accuracy")} | '
            f'test {_values(rows, "test_accuracy")}')


def final_rows(run: RunDirectory) -> list[dict]:
    """The last metrics row of every replica, with its convergence epoch."""
    status = run.status()
    last = {}
    for row in run.read_metrics():
        last[row['replica']] = row
    rows = []
    converged = status.get('converged_epoch') or []
    for replica in sorted(last):
        row = dict(last[replica])
        row['converged_epoch'] = converged[replica] if replica < len(converged) and converged[replica] >= 0 else None
        rows.append(row)
    return rows


def write_summary(run: RunDirectory) -> str:
    """Writes summary.txt and summary.csv; returns the text."""
    rows = final_rows(run)
    table = text_table(rows, SUMMARY_COLUMNS)
    text = (f'memjax run {run.path}\n'
            'accuracies after the last epoch; memorization = noisy subset vs its noisy labels, '
            'noisy_true = noisy subset vs true labels\n' + table + '\n')
    with open(run.file('summary.txt'), 'w') as f:
        f.write(text)
    write_csv(run.file('summary.csv'), rows, SUMMARY_COLUMNS)
    return text


__all__ = ['epoch_line', 'final_rows', 'write_summary', 'format_value']
