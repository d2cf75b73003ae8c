"""The final summary table of a training run (summary.txt / summary.csv)."""

from __future__ import annotations

from memjax.report.tables import format_value, text_table, write_csv
from memjax.rundir import RunDirectory, write_text

SUMMARY_COLUMNS = ('replica', 'noise_ratio', 'seed', 'epoch', 'converged_epoch', 'train_accuracy',
                   'clean_accuracy', 'memorization_accuracy', 'noisy_true_accuracy', 'val_accuracy',
                   'test_accuracy')


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
    write_text(run.file('summary.txt'), text)
    write_csv(run.file('summary.csv'), rows, SUMMARY_COLUMNS)
    return text


__all__ = ['final_rows', 'write_summary', 'format_value']
