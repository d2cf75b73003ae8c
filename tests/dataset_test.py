import os

import numpy as np
import pytest

from memjax.experiment import base_config
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


@pytest.mark.skipif(not os.path.isdir('/usr/share/datasets/fashion-mnist'),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_debian_fashion_mnist_is_found_without_data_dir():
    c = base_config()
    c.data.num_train = 100
    c.data.num_test = 100
    data = load_dataset(c.data)
    assert data.val_images.shape[0] == 5000 and data.image_shape == (28, 28, 1)
