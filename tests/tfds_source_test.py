import sys
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds

from memjax.experiment import base_config
from memjax.data.dataset import load_dataset
from memjax.data.tfds_source import read_tfds
from memjax.errors import DataNotFoundError


@pytest.mark.parametrize('name,shape,classes', [('cifar10', (32, 32, 3), 10), ('mnist', (28, 28, 1), 10),
                                                ('cifar100', (32, 32, 3), 100),
                                                ('svhn_cropped', (32, 32, 3), 10)])
def test_reads_mocked_tfds_without_tensorflow_or_network(tmp_path, name, shape, classes):
    with tfds.testing.mock_data(num_examples=24):
        splits, num_classes = read_tfds(name, str(tmp_path))
    images, labels = splits['train']
    assert images.shape == (24, *shape) and images.dtype == np.uint8
    assert labels.dtype == np.int32 and labels.max() < classes
    assert num_classes == classes
    assert 'tensorflow' not in sys.modules


def test_dataset_from_mocked_tfds_carves_validation(tmp_path):
    c = base_config()
    c.data.source = 'tfds'
    c.data.name = 'cifar10'
    c.data.data_dir = str(tmp_path)
    c.data.val_size = 10
    with tfds.testing.mock_data(num_examples=50):
        data = load_dataset(c.data)
    assert data.num_train == 40 and data.val_images.shape == (10, 32, 32, 3)
    assert not set(data.train_index) & set(data.val_index)


def test_unprepared_data_fails_fast_with_the_prepare_command(tmp_path):
    start = time.perf_counter()
    with pytest.raises(DataNotFoundError) as error:
        read_tfds('cifar10', str(tmp_path))
    assert time.perf_counter() - start < 10
    message = str(error.value)
    assert "file_format='array_record'" in message and 'download_and_prepare' in message
    assert str(tmp_path) in message and '\n' not in message
