"""Readers for the data sets' original files, with no TensorFlow and no network.

Supported layouts inside `data_dir` (searched also one folder down):
- MNIST / Fashion-MNIST: `train-images-idx3-ubyte[.gz]`, `train-labels-idx1-ubyte[.gz]`,
  `t10k-images-idx3-ubyte[.gz]`, `t10k-labels-idx1-ubyte[.gz]`. Debian's
  `dataset-fashion-mnist` installs them in /usr/share/datasets/fashion-mnist.
- CIFAR-10: the python batches (`data_batch_1..5`, `test_batch`, usually in
  `cifar-10-batches-py/`) or the tarball `cifar-10-python.tar.gz`.
- CIFAR-100: `train`, `test` (fine labels), in `cifar-100-python/` or the tarball
  `cifar-100-python.tar.gz`.
- SVHN (cropped digits): `train_32x32.mat`, `test_32x32.mat` (label 10 means 0).

Every reader returns `(images uint8 [N, H, W, C], labels int32 [N])` per split.
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import tarfile

import numpy as np

from memjax.errors import DataNotFoundError

DEBIAN_FASHION_MNIST = '/usr/share/datasets/fashion-mnist'

_FETCH_HINTS = {
    'mnist': 'download the four files from https://storage.googleapis.com/cvdf-datasets/mnist/ into it',
    'fashion_mnist': (f'on Debian/Ubuntu run `sudo apt-get install -y dataset-fashion-mnist` '
                      f'(files land in {DEBIAN_FASHION_MNIST}), or download the four files from '
                      'https://github.com/zalandoresearch/fashion-mnist into it'),
    'cifar10': 'download https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz into it',
    'cifar100': 'download https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz into it',
    'svhn_cropped': ('download http://ufldl.stanford.edu/housenumbers/train_32x32.mat and '
                     'test_32x32.mat into it'),
}
RAW_DATASETS = tuple(_FETCH_HINTS)


def read_idx(path: str) -> np.ndarray:
    """Reads an IDX file (optionally gzip-compressed) into a uint8 array."""
    opener = gzip.open if path.endswith('.gz') else open
    with opener(path, 'rb') as f:
        data = f.read()
    zero, dtype_code, ndim = struct.unpack('>HBB', data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise DataNotFoundError(f"{path} is not an unsigned-byte IDX file (header {data[:4]!r}); "
                                "replace it with the original MNIST-format file")
    dims = struct.unpack(f'>{ndim}I', data[4:4 + 4 * ndim])
    array = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(dims)):
        raise DataNotFoundError(f"{path} is truncated: header says {dims}, found {array.size} bytes; "
                                "download it again")
    return array.reshape(dims)


def _find(data_dir: str, names: list[str]) -> str | None:
    """The first of `names` found in data_dir or one of its direct subfolders."""
    folders = [data_dir]
    if os.path.isdir(data_dir):
        folders += sorted(os.path.join(data_dir, d) for d in os.listdir(data_dir)
                          if os.path.isdir(os.path.join(data_dir, d)))
    for folder in folders:
        for name in names:
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                return path
    return None


def _missing(name: str, data_dir: str, expected: str) -> DataNotFoundError:
    return DataNotFoundError(
        f"{name} raw files not found in data_dir={data_dir!r} (expected {expected}); "
        f"{_FETCH_HINTS[name]}, or set --config.data.data_dir to the folder that holds them")


def _read_mnist_like(name: str, data_dir: str) -> dict:
    out = {}
    for split, prefix in (('train', 'train'), ('test', 't10k')):
        paths = [_find(data_dir, [f'{prefix}-{kind}-idx{n}-ubyte.gz', f'{prefix}-{kind}-idx{n}-ubyte'])
                 for kind, n in (('images', 3), ('labels', 1))]
        if None in paths:
            raise _missing(name, data_dir, f'{prefix}-images-idx3-ubyte.gz and {prefix}-labels-idx1-ubyte.gz')
        images, labels = read_idx(paths[0]), read_idx(paths[1])
        out[split] = (images[..., None], labels.astype(np.int32))
    return out


def _unpickle(blob: bytes) -> dict:
    return pickle.loads(blob, encoding='bytes')


def _cifar_members(name: str, data_dir: str, folder: str, tarball: str, members: list[str]) -> dict:
    """{member: unpickled dict} from the extracted folder or the tarball."""
    paths = {m: _find(os.path.join(data_dir, folder), [m]) or _find(data_dir, [m]) for m in members}
    if all(paths.values()):
        out = {}
        for member, path in paths.items():
            with open(path, 'rb') as f:
                out[member] = _unpickle(f.read())
        return out
    archive = _find(data_dir, [tarball])
    if archive is None:
        raise _missing(name, data_dir, f'{folder}/{{{",".join(members)}}} or {tarball}')
    out = {}
    with tarfile.open(archive, 'r:*') as tar:
        for info in tar.getmembers():
            base = os.path.basename(info.name)
            if base in members and info.isfile():
                out[base] = _unpickle(tar.extractfile(info).read())
    if len(out) != len(members):
        raise _missing(name, data_dir, f'all of {members} inside {archive}')
    return out


def _cifar_arrays(batches: list[dict], label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    data = np.concatenate([b[b'data'] for b in batches]).reshape(-1, 3, 32, 32)
    labels = np.concatenate([np.asarray(b[label_key]) for b in batches]).astype(np.int32)
    return np.ascontiguousarray(data.transpose(0, 2, 3, 1)), labels


def _read_cifar10(data_dir: str) -> dict:
    train_names = [f'data_batch_{i}' for i in range(1, 6)]
    batches = _cifar_members('cifar10', data_dir, 'cifar-10-batches-py', 'cifar-10-python.tar.gz',
                             train_names + ['test_batch'])
    return {'train': _cifar_arrays([batches[n] for n in train_names], b'labels'),
            'test': _cifar_arrays([batches['test_batch']], b'labels')}


def _read_cifar100(data_dir: str) -> dict:
    batches = _cifar_members('cifar100', data_dir, 'cifar-100-python', 'cifar-100-python.tar.gz',
                             ['train', 'test'])
    return {split: _cifar_arrays([batches[split]], b'fine_labels') for split in ('train', 'test')}


def _read_svhn(data_dir: str) -> dict:
    import scipy.io  # Only this reader needs SciPy.
    out = {}
    for split in ('train', 'test'):
        path = _find(data_dir, [f'{split}_32x32.mat'])
        if path is None:
            raise _missing('svhn_cropped', data_dir, 'train_32x32.mat and test_32x32.mat')
        mat = scipy.io.loadmat(path)
        images = np.ascontiguousarray(mat['X'].transpose(3, 0, 1, 2)).astype(np.uint8)
        labels = mat['y'].reshape(-1).astype(np.int32) % 10
        out[split] = (images, labels)
    return out


_READERS = {
    'mnist': lambda d: _read_mnist_like('mnist', d),
    'fashion_mnist': lambda d: _read_mnist_like('fashion_mnist', d),
    'cifar10': _read_cifar10,
    'cifar100': _read_cifar100,
    'svhn_cropped': _read_svhn,
}
NUM_CLASSES = {'mnist': 10, 'fashion_mnist': 10, 'cifar10': 10, 'cifar100': 100, 'svhn_cropped': 10}


def default_raw_dir(name: str) -> str | None:
    """Where the data set's files are found with no data_dir given (Debian's package)."""
    return DEBIAN_FASHION_MNIST if name == 'fashion_mnist' else None


def read_raw(name: str, data_dir: str | None) -> dict:
    """Reads a data set's original files.

    Returns:
      `{'train': (images [N, H, W, C] uint8, labels [N] int32), 'test': (...)}`.
    """
    data_dir = data_dir or default_raw_dir(name)
    if data_dir is None:
        raise DataNotFoundError(
            f"data.source='raw' needs --config.data.data_dir for {name!r}: create a folder, "
            f"{_FETCH_HINTS[name]}, and pass that folder")
    if not os.path.isdir(data_dir):
        raise _missing(name, data_dir, 'an existing folder')
    return _READERS[name](data_dir)
