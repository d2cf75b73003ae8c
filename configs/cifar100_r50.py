"""ResNet-50 on CIFAR-100 (P2) with random-label noise, trained until 99% training accuracy.

One replica per noise ratio r in (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.375, 0.5) (random labels,
which may equal the true one; P1 also uses r = 0.675), CIFAR-style network
(3x3 stem, no max-pool), SGD with momentum, cosine schedule. Params are kept
every 5 epochs and at the first and last (R x ResNet x every epoch would be
tens of GB); set --config.checkpoint.every=1 for full-resolution curves.

Data: tfds `cifar100` prepared as array_record in data_dir (see README, "Data"),
or --config.data.source=raw with the python-version tarball.

Command:
    python -m memjax.main --config=configs/cifar100_r50.py --workdir=runs/cifar100_r50 \
        --config.data.data_dir=$HOME/tensorflow_datasets
Expected time on one H100: about an hour in bfloat16 (8 replicas x 7.8 GFLOP per training image, up to
200 epochs; an estimate from the FLOP count at ~30% of peak, not a measurement;
replicas stop as they converge).
"""

from memjax.config import base_config


def get_config():
    c = base_config()
    c.data.source = 'tfds'
    c.data.name = 'cifar100'
    c.data.val_size = 5000
    c.noise.ratios = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.375, 0.5)
    c.noise.mode = 'random'
    c.model.name = 'resnet50'
    c.model.dtype = 'bfloat16'
    c.train.epochs = 200
    c.train.batch_size = 128
    c.train.learning_rate = 0.1
    c.train.schedule = 'cosine'
    c.train.weight_decay = 5e-4
    c.train.stop_accuracy = 0.99
    c.checkpoint.every = 5
    return c
