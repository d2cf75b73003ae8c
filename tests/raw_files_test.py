import gzip
import hashlib
import os
import pickle
import struct
import tarfile

import numpy as np
import pytest
import scipy.io

from memjax.data.raw_files import read_idx, read_raw
from memjax.errors import DataNotFoundError

MNIST_SAMPLE = os.path.join(os.path.dirname(__file__), 'data', 'mnist')
rng = np.random.default_rng(0)


def write_idx(path, array):
    header = struct.pack('>HBB', 0, 0x08, array.ndim) + struct.pack(f'>{array.ndim}I', *array.shape)
    with gzip.open(path, 'wb') as f:
        f.write(header + array.astype(np.uint8).tobytes())


def write_mnist_like(folder, n_train=12, n_test=7):
    os.makedirs(folder, exist_ok=True)
    data = {}
    for prefix, n in (('train', n_train), ('t10k', n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        write_idx(os.path.join(folder, f'{prefix}-images-idx3-ubyte.gz'), images)
        write_idx(os.path.join(folder, f'{prefix}-labels-idx1-ubyte.gz'), labels)
        data[prefix] = (images, labels)
    return data


def test_idx_round_trip(tmp_path):
    array = rng.integers(0, 256, (3, 5, 4), dtype=np.uint8)
    write_idx(str(tmp_path / 'x.gz'), array)
    assert np.array_equal(read_idx(str(tmp_path / 'x.gz')), array)


@pytest.mark.parametrize('name', ['mnist', 'fashion_mnist'])
def test_mnist_like_folder(tmp_path, name):
    data = write_mnist_like(str(tmp_path))
    splits = read_raw(name, str(tmp_path))
    images, labels = splits['train']
    assert images.shape == (12, 28, 28, 1) and images.dtype == np.uint8
    assert np.array_equal(images[..., 0], data['train'][0])
    assert np.array_equal(labels, data['train'][1]) and labels.dtype == np.int32
    assert splits['test'][0].shape == (7, 28, 28, 1)


def _cifar_batch(n, label_key):
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 100, n).tolist()
    rows = images.transpose(0, 3, 1, 2).reshape(n, -1)  # CIFAR stores channel-major rows
    return {b'data': rows, label_key: labels}, images, np.asarray(labels)


def test_cifar10_folder_and_tarball_agree(tmp_path):
    folder = tmp_path / 'cifar-10-batches-py'
    folder.mkdir()
    expected = []
    for name in [f'data_batch_{i}' for i in range(1, 6)] + ['test_batch']:
        batch, images, labels = _cifar_batch(4, b'labels')
        expected.append((images, labels))
        (folder / name).write_bytes(pickle.dumps(batch))
    from_folder = read_raw('cifar10', str(tmp_path))
    train_images, train_labels = from_folder['train']
    assert train_images.shape == (20, 32, 32, 3)
    assert np.array_equal(train_images[:4], expected[0][0])
    assert np.array_equal(train_labels[4:8], expected[1][1])
    assert np.array_equal(from_folder['test'][0], expected[5][0])

    tar_dir = tmp_path / 'tar'
    tar_dir.mkdir()
    with tarfile.open(tar_dir / 'cifar-10-python.tar.gz', 'w:gz') as tar:
        tar.add(folder, arcname='cifar-10-batches-py')
    from_tar = read_raw('cifar10', str(tar_dir))
    for split in ('train', 'test'):
        for a, b in zip(from_folder[split], from_tar[split]):
            assert np.array_equal(a, b)


def test_cifar100_uses_fine_labels(tmp_path):
    folder = tmp_path / 'cifar-100-python'
    folder.mkdir()
    batch, images, labels = _cifar_batch(5, b'fine_labels')
    batch[b'coarse_labels'] = [0] * 5
    (folder / 'train').write_bytes(pickle.dumps(batch))
    (folder / 'test').write_bytes(pickle.dumps(batch))
    splits = read_raw('cifar100', str(tmp_path))
    assert np.array_equal(splits['train'][0], images)
    assert np.array_equal(splits['train'][1], labels)


def test_svhn_mat_maps_label_10_to_0(tmp_path):
    images = rng.integers(0, 256, (32, 32, 3, 6), dtype=np.uint8)
    labels = np.array([[10], [1], [2], [10], [9], [5]], np.uint8)
    for split in ('train', 'test'):
        scipy.io.savemat(str(tmp_path / f'{split}_32x32.mat'), {'X': images, 'y': labels})
    splits = read_raw('svhn_cropped', str(tmp_path))
    out_images, out_labels = splits['train']
    assert out_images.shape == (6, 32, 32, 3)
    assert np.array_equal(out_images[2], images[..., 2])
    assert out_labels.tolist() == [0, 1, 2, 0, 9, 5]


def test_missing_files_name_the_folder_and_the_fix(tmp_path):
    with pytest.raises(DataNotFoundError, match='apt-get install -y dataset-fashion-mnist'):
        read_raw('fashion_mnist', str(tmp_path))
    with pytest.raises(DataNotFoundError, match='cifar-10-python.tar.gz'):
        read_raw('cifar10', str(tmp_path))
    with pytest.raises(DataNotFoundError, match='data_dir'):
        read_raw('cifar10', None)


def test_real_mnist_test_set_sample():
    """The shipped MNIST sample (tests/data/README.md: the first 200 test images) read as IDX.

    Would fail on a wrong header length or offset, a byte order slip in the dimensions, or images stored
    transposed: the published first labels, the class counts, a checksum and the digits' ink would all change.
    """
    images = read_idx(os.path.join(MNIST_SAMPLE, 't10k-images-idx3-ubyte.gz'))
    labels = read_idx(os.path.join(MNIST_SAMPLE, 't10k-labels-idx1-ubyte.gz'))
    assert images.shape == (200, 28, 28) and labels.shape == (200,)
    # MNIST's published first test labels, and this sample's class counts.
    assert labels[:20].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9, 0, 6, 9, 0, 1, 5, 9, 7, 3, 4]
    assert np.bincount(labels).tolist() == [17, 28, 16, 16, 28, 20, 20, 24, 10, 21]
    assert hashlib.sha256(images.tobytes()).hexdigest()[:16] == 'b40951266842e680'
    assert 28 < images.mean() < 36  # the mean pixel of MNIST is about 33 (0.13 in [0, 1] units)
    # Ones (1) are the thinnest digits, zeros (0) and eights (8) the inkiest; the ink of a one is vertical.
    ink = {k: images[labels == k].mean() for k in range(10)}
    assert ink[1] < min(ink[k] for k in range(10) if k != 1) and ink[0] > ink[7]
    ones = images[labels == 1].astype(float).mean(0)
    assert ones[:, 12:16].mean() > 2 * ones[12:16, :].mean()  # central columns, not rows: not transposed
