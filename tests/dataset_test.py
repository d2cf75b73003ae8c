import hashlib
import os

import numpy as np
import pytest

from memjax.experiment import base_config
from memjax.data import raw_files
from memjax.data.dataset import load_dataset
from memjax.data.synthetic import synthetic_splits
from memjax.errors import ConfigError, DataNotFoundError
from raw_files_test import write_mnist_like


def test_synthetic_is_deterministic_and_class_structured():
    a = synthetic_splits(200, 50, (8, 8, 3), num_classes=5, seed=1)
    b = synthetic_splits(200, 50, (8, 8, 3), num_classes=5, seed=1)
    c = synthetic_splits(200, 50, (8, 8, 3), num_classes=5, seed=2)
    assert np.array_equal(a['train'][0], b['train'][0]) and np.array_equal(a['train'][1], b['train'][1])
    assert not np.array_equal(a['train'][0], c['train'][0])
    images, labels = a['train']
    assert images.dtype == np.uint8 and images.shape == (200, 8, 8, 3)
    assert np.bincount(labels).tolist() == [40] * 5
    # A nearest-class-mean classifier separates the classes: they are learnable.
    x = images.reshape(200, -1).astype(float)
    means = np.stack([x[labels == k].mean(0) for k in range(5)])
    test_x = a['test'][0].reshape(50, -1).astype(float)
    predicted = np.argmin(((test_x[:, None] - means[None]) ** 2).sum(-1), axis=1)
    assert np.mean(predicted == a['test'][1]) > 0.8


def _raw_config(folder, **data):
    c = base_config()
    c.data.source = 'raw'
    c.data.name = 'mnist'
    c.data.data_dir = folder
    for k, v in data.items():
        c.data[k] = v
    return c


def test_validation_split_is_disjoint_sized_and_reproducible(tmp_path):
    write_mnist_like(str(tmp_path), n_train=100, n_test=30)
    c = _raw_config(str(tmp_path), val_size=20, num_train=50, num_test=10)
    data = load_dataset(c.data)
    again = load_dataset(c.data)
    assert data.num_train == 50 and data.val_images.shape[0] == 20 and data.test_images.shape[0] == 10
    assert not set(data.train_index) & set(data.val_index)
    assert np.array_equal(data.train_index, again.train_index)
    assert np.array_equal(data.val_images, again.val_images)
    assert data.mean.shape == (1,) and data.std.shape == (1,)


def test_default_validation_size_is_ten_percent_up_to_5000(tmp_path):
    write_mnist_like(str(tmp_path), n_train=100, n_test=5)
    data = load_dataset(_raw_config(str(tmp_path)).data)
    assert data.val_images.shape[0] == 10 and data.num_train == 90


def test_validation_larger_than_data_is_a_clear_error(tmp_path):
    write_mnist_like(str(tmp_path), n_train=30, n_test=5)
    with pytest.raises(ConfigError, match='val_size=40 .* 30-example'):
        load_dataset(_raw_config(str(tmp_path), val_size=40).data)
    with pytest.raises(ConfigError, match='num_train=29'):
        load_dataset(_raw_config(str(tmp_path), val_size=5, num_train=29).data)


def test_unknown_dataset_name_is_a_clear_error():
    c = base_config()
    c.data.name = 'imagenet'
    with pytest.raises(ConfigError, match="'imagenet'"):
        load_dataset(c.data)


def test_missing_data_dir_is_a_clear_error(tmp_path):
    with pytest.raises(DataNotFoundError, match=str(tmp_path)):
        load_dataset(_raw_config(str(tmp_path / 'nowhere')).data)


# The shipped sample (tests/data/README.md): the first 500 training and 200 test images of Fashion-MNIST.
SAMPLE = os.path.join(os.path.dirname(__file__), 'data', 'fashion_mnist')
# The data set's first training labels (ankle boot, T-shirt, T-shirt, dress, T-shirt, pullover, sneaker, ...)
# and first test labels, as published with Fashion-MNIST.
FIRST_TRAIN_LABELS = [9, 0, 0, 3, 0, 2, 7, 2, 5, 5, 0, 9, 5, 5, 7, 9, 1, 0, 6, 4]
FIRST_TEST_LABELS = [9, 2, 1, 1, 6, 1, 4, 6, 5, 7, 4, 5, 7, 3, 4, 1, 2, 4, 8, 0]


def test_real_fashion_mnist_sample_through_the_raw_source():
    """The path of `data.source='raw'` on real images: splits, label pairing and normalisation.

    Would fail on: labels read from a wrong offset (first labels, class counts), images read from a wrong offset
    or transposed (checksum, class-mean classifier), labels not travelling with their images through the split
    shuffle, a validation split that overlaps training or is not 10 %, statistics in 0-255 units or taken over
    another split than the training subset.
    """
    data = load_dataset(_raw_config(SAMPLE, name='fashion_mnist').data)
    assert (data.num_train, data.val_images.shape[0], data.test_images.shape[0]) == (450, 50, 200)
    assert data.image_shape == (28, 28, 1) and data.num_classes == 10
    assert not set(data.train_index) & set(data.val_index)
    assert sorted(np.concatenate([data.train_index, data.val_index]).tolist()) == list(range(500))
    # Labels at their source positions: the published first labels and the sample's class counts.
    labels = np.empty(500, np.int64)
    labels[data.train_index], labels[data.val_index] = data.train_labels, data.val_labels
    images = np.empty((500, 28, 28, 1), np.uint8)
    images[data.train_index], images[data.val_index] = data.train_images, data.val_images
    assert labels[:20].tolist() == FIRST_TRAIN_LABELS
    assert np.bincount(labels).tolist() == [52, 54, 47, 49, 53, 51, 53, 49, 50, 42]
    assert data.test_labels[:20].tolist() == FIRST_TEST_LABELS
    # The images' bytes: the source's first training image (checksum of the full data set's) and the test split.
    assert hashlib.sha256(images[0].tobytes()).hexdigest()[:16] == '5bd44e331a6d6998'
    assert hashlib.sha256(data.test_images.tobytes()).hexdigest()[:16] == '1ea26a8badf5cf72'
    # Images and labels belong together: class means of the training subset classify the test images far
    # above chance (10 %); one image of offset between images and labels would give chance.
    x = data.train_images.reshape(450, -1).astype(np.float64)
    means = np.stack([x[data.train_labels == k].mean(0) for k in range(10)])
    test_x = data.test_images.reshape(200, -1).astype(np.float64)
    predicted = np.argmin(((test_x[:, None] - means[None]) ** 2).sum(-1), axis=1)
    assert np.mean(predicted == data.test_labels) > 0.6
    # Ink per class: sandals (5) least, then trousers (1), T-shirts (0), pullovers (2) and coats (4) most.
    ink = {k: x[data.train_labels == k].mean() for k in range(10)}
    assert ink[5] < ink[1] < ink[0] < min(ink[2], ink[4])
    # Normalisation: [0, 1] units, over the training subset only, near the full set's 0.2860 / 0.3530.
    pixels = data.train_images.astype(np.float64) / 255.0
    np.testing.assert_allclose(data.mean, [pixels.mean()], rtol=1e-5)
    np.testing.assert_allclose(data.std, [pixels.std()], rtol=1e-5)
    assert abs(data.mean[0] - 0.2860) < 0.01 and abs(data.std[0] - 0.3530) < 0.01


def test_fashion_mnist_is_found_in_debians_folder_without_data_dir(monkeypatch):
    """With no data_dir, raw Fashion-MNIST comes from Debian's folder (here pointed at the sample)."""
    monkeypatch.setattr(raw_files, 'DEBIAN_FASHION_MNIST', SAMPLE)
    c = base_config()
    assert c.data.source == 'raw' and c.data.name == 'fashion_mnist' and c.data.data_dir is None
    c.data.num_train = 100
    c.data.num_test = 100
    data = load_dataset(c.data)
    assert data.val_images.shape[0] == 50 and data.num_train == 100 and data.image_shape == (28, 28, 1)
    test_images, test_labels = raw_files.read_raw('fashion_mnist', SAMPLE)['test']
    assert np.array_equal(data.test_images, test_images[data.test_index])
    assert np.array_equal(data.test_labels, test_labels[data.test_index])
