"""P2 (Gupta, Saha, Rai): the small CNN (3 conv + 4 fc) on SVHN with random-label noise.

Trains one replica per noise ratio r in {0, 5, 10, 15, 20, 25, 37.5, 50}% (random
labels, which may equal the true one), each until its training accuracy
exceeds 99%, keeping params every epoch for CKA, stitching and rewinding.

Data: tfds `svhn_cropped` prepared as array_record in data_dir (see README,
"Data"), or `--config.data.source=raw` with train_32x32.mat / test_32x32.mat.

Command:
    python -m memjax.main --config=configs/svhn_cnn.py --workdir=runs/svhn_cnn \
        --config.data.data_dir=$HOME/tensorflow_datasets
Replicas are independent (own init and data order per ratio, the default
train.shared_start=False), as the paper trained one model per ratio.

Expected time on one GPU: minutes (8 replicas of a 0.1 GFLOP/image CNN; an
estimate from the FLOP count, not a measurement).
"""

from memjax.experiment import base_config
from memjax.paper_settings import paper_cka


def get_config():
    c = base_config()
    c.data.source = 'tfds'
    c.data.name = 'svhn_cropped'
    c.data.val_size = 5000
    c.noise.ratios = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.375, 0.5)
    c.noise.mode = 'random'
    c.model.name = 'cnn'
    c.model.width = 32
    c.train.epochs = 150
    c.train.batch_size = 128
    c.train.learning_rate = 0.05
    c.train.schedule = 'cosine'
    c.train.weight_decay = 5e-4
    c.train.stop_accuracy = 0.99
    c.checkpoint.every = 1
    paper_cka(c)  # P1's CKA: biased linear, full batch on the whole test split (memjax/paper_settings.py)
    return c
