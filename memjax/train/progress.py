"""What training shows while it runs: the progress bar of an epoch and one line per epoch."""

from __future__ import annotations

import sys


def progress_bar(total: int, description: str):
    """A tqdm bar with an ETA on stderr (hidden when stderr is not a terminal)."""
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=description, leave=False, unit='step', dynamic_ncols=True,
                disable=None, file=sys.stderr)


def _values(rows: list[dict], key: str) -> str:
    values = [row.get(key) for row in rows]
    if len(values) > 6:
        present = [v for v in values if v is not None]
        return f'{min(present):.2f}..{max(present):.2f}' if present else '-'
    return '/'.join('-' if v is None else f'{v:.2f}' for v in values)


def epoch_line(epoch: int, epochs: int, rows: list[dict], seconds: float, left: float | None = None) -> str:
    """One line per epoch: values per replica in replica order (or min..max beyond 6), and at most
    how many seconds of training are left (`left`, when known)."""
    rest = '' if left is None else f' | training <= {left:.0f}s more'
    return (f'epoch {epoch:3d}/{epochs} {seconds:6.1f}s | loss {_values(rows, "train_loss")} | '
            f'train {_values(rows, "train_accuracy")} | mem {_values(rows, "memorization_accuracy")} | '
            f'test {_values(rows, "test_accuracy")}{rest}')


def job_estimate(first_epoch_seconds: float, reference_time: tuple) -> str:
    """The line after this process's first trained epoch: the config's reference times scaled to this
    machine (reference_time = (epoch 1 seconds, whole job seconds) on the reference machine)."""
    scale = first_epoch_seconds / reference_time[0]
    return (f'this machine: epoch 1 took {first_epoch_seconds:.1f}s ({scale:.2f}x the reference): the whole job '
            f'should take about {scale * reference_time[1] / 60:.1f} min')
