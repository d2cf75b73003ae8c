"""P1 and P2 (Gupta, Saha, Rai): the small CNN (3 conv + 4 fc) on SVHN with random-label noise.

Trains one replica per noise ratio r in {0, 5, 10, 15, 20, 25, 37.5, 50, 67.5}%
(random labels, which may equal the true one; 67.5% is P1's only), each until
its training accuracy exceeds 99%, keeping params every epoch. Then the
papers' analyses of this model: P1's CKA over training (layer convergence,
P1 supplementary), noisy-vs-clean CKA (P1 Fig. 3a) and CKA heatmaps, and
stitching in both directions after every conv and fc layer with P2's
critical depths (P1 Fig. 2a, P2 sections 4-5). P2 fine-tuned ResNet-18
only, so fine-tuning is not listed.

Data: tfds `svhn_cropped` prepared as array_record in data_dir (see README,
"Data"), or `--config.data.source=raw` with train_32x32.mat / test_32x32.mat.

Command:
    python -m memjax.main --config=configs/svhn_cnn.py --workdir=runs/svhn_cnn \
        --config.data.data_dir=$HOME/tensorflow_datasets
Replicas are independent (own init and data order per ratio, the default
train.shared_start=False), as the paper trained one model per ratio.

Expected time on one GPU: minutes for training (9 replicas of a 0.1 GFLOP/image
CNN; an estimate from the FLOP count, not a measurement); the analyses not
measured.
"""

from memjax.experiment import apply_variant, base_config
from memjax.paper_settings import P1_P2_ANALYSES, P2_RATIOS, paper_cka


def get_config(arg=None):
    c = base_config()
    c.data.source = 'tfds'
    c.data.name = 'svhn_cropped'
    c.data.val_size = 5000
    c.noise.ratios = P2_RATIOS + (0.675,)  # P1 adds 67.5%
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
    c.analyses = tuple(a for a in P1_P2_ANALYSES if a != 'finetune')  # P2 fine-tuned ResNet-18 only
    return apply_variant(c, arg)
