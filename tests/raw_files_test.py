import gzip
import os
import pickle
import struct
import tarfile

import numpy as np
import pytest
import scipy.io

from memjax.data.raw_files import read_idx, read_raw
from memjax.errors import DataNotFoundError

SHARED_MNIST = os.path.join(os.path.dirname(__file__), '..', '..', 'shared', 'data', 'mnist')
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


@pytest.mark.skipif(not os.path.isdir(SHARED_MNIST), reason='real MNIST test set not present')
def test_real_mnist_test_set():
    images = read_idx(os.path.join(SHARED_MNIST, 't10k-images-idx3-ubyte.gz'))
    labels = read_idx(os.path.join(SHARED_MNIST, 't10k-labels-idx1-ubyte.gz'))
    assert images.shape == (10000, 28, 28) and labels.shape == (10000,)
    # The well-known class counts of the MNIST test set.
    assert np.bincount(labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert 30 < images.mean() < 36  # mean pixel of MNIST is about 33
