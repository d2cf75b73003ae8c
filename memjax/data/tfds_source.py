"""TensorFlow Datasets by name, read through `tfds.data_source` (no TensorFlow).

Reading a prepared `data_dir` needs only tensorflow-datasets, array_record and
pillow. Preparing one (downloading and converting) needs TensorFlow and the
network, once, on any machine; the error message gives the exact command. We
never call `tfds.load`, whose unmocked download retries for minutes offline.
"""

from __future__ import annotations

import os

import numpy as np

from memjax.errors import DataNotFoundError

TFDS_DATASETS = ('mnist', 'fashion_mnist', 'cifar10', 'cifar100', 'svhn_cropped')
DEFAULT_TFDS_DIR = os.path.join('~', 'tensorflow_datasets')


def _prepare_command(name: str, data_dir: str) -> str:
    return ("pip install tensorflow tensorflow-datasets && python -c \"import tensorflow_datasets as tfds; "
            f"tfds.builder('{name}', data_dir='{data_dir}', file_format='array_record')"
            ".download_and_prepare()\" (on a machine with network; then copy the folder here)")


def _read_split(source, batch: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """All examples of a data source as (images uint8 [N,H,W,C], labels int32 [N])."""
    images, labels = [], []
    n = len(source)
    for lo in range(0, n, batch):
        keys = list(range(lo, min(n, lo + batch)))
        try:
            records = source.__getitems__(keys)
        except TypeError:  # tfds.testing.mock_data's source has no batched read.
            records = [source[k] for k in keys]
        images.extend(np.asarray(r['image'], np.uint8) for r in records)
        labels.extend(int(r['label']) for r in records)
    return np.stack(images), np.asarray(labels, np.int32)


def read_tfds(name: str, data_dir: str | None) -> tuple[dict, int]:
    """Reads the train and test splits of a prepared tfds data set.

    Returns:
      `({'train': (images, labels), 'test': (images, labels)}, num_classes)`.

    Raises:
      DataNotFoundError: within a second when the data is not prepared, with the
        command that prepares it.
    """
    import tensorflow_datasets as tfds  # Imported here: only this source needs it.

    data_dir = os.path.expanduser(data_dir or DEFAULT_TFDS_DIR)
    builder = tfds.builder(name, data_dir=data_dir)
    try:
        splits = {split: tfds.data_source(name, split=split, data_dir=data_dir, download=False)
                  for split in ('train', 'test')}
    except Exception as error:  # tfds raises several types for "not prepared".
        where = builder.data_path
        if os.path.isdir(where) and 'TFRECORD' in str(error).upper():
            raise DataNotFoundError(
                f"tfds data set {name!r} in {where} is in tfrecord format, which cannot be read "
                f"without TensorFlow; re-prepare it as array_record: {_prepare_command(name, data_dir)}"
            ) from None
        raise DataNotFoundError(
            f"tfds data set {name!r} is not prepared in data_dir={data_dir!r}; prepare it with: "
            f"{_prepare_command(name, data_dir)}, or use --config.data.source=raw with its "
            "original files") from None
    num_classes = builder.info.features['label'].num_classes
    return {split: _read_split(source) for split, source in splits.items()}, num_classes
