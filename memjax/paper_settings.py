"""Settings shared by the P1/P2 ResNet configs (configs/cifar*_r*.py).

P1/P2 train CIFAR-style ResNets on CIFAR-10/100 with random-label noise
(a random label may equal the true one) until each model's training accuracy
exceeds 99%. The papers give no optimizer details; these are the standard
CIFAR recipe: SGD with momentum 0.9, learning rate 0.1 with cosine decay over
at most 200 epochs, weight decay 5e-4, batch 128, bfloat16 compute. Params
are kept every 5 epochs plus the first and last (R ResNets every epoch would
be tens of GB); --config.checkpoint.every=1 gives full-resolution curves.
Data: tfds prepared as array_record in data_dir (README, "Data"), or
--config.data.source=raw with the python-version tarball.

Replicas are independent (own init, data order and augmentation per ratio:
`train.shared_start=False`, the default): the papers trained a separate model
per noise ratio and say nothing of a shared start.

CKA (when P1's analyses are listed) is P1's estimator: biased linear CKA,
HSIC = tr(K H L H) / (N-1)^2, full batch, on the whole 10,000-image test
split (analysis.cka.estimator='linear', minibatch_size=None,
num_examples=10000). Each unit's 10,000 x 10,000 Gram is accumulated
blockwise over example blocks of analysis.cka.forward_batch, so no unit's
[10,000, D] activations are held; the Grams take L x 400 MB per model, and
at most three models' are held at a time (see
memjax/analysis/similarity/representations.py).
The debiased value from the same Grams is written beside it (cka_debiased).
The two differ on wide layers (biased CKA of independent D-dimensional
features is about D/(N+D); debiased about 0): the biased one is what P1's
figures plot. Minibatch debiased CKA (Nguyen, Raghu & Kornblith 2021) stays
an option: --config.analysis.cka.estimator=debiased
--config.analysis.cka.minibatch_size=1000.

CKA is per layer (analysis.cka.granularity='layer'): P1's Fig. 1 plots CKA
against each conv layer, not each residual block, so a ResNet-18 is compared
at its 21 layers (stem, layer1.0.conv_bn1, ..., layer2.0.shortcut, ...,
head.dense) and, after each block's layers, the block's output after the
skip addition (layer1.0, ..., layer4.1): 29 units rather than its 10 stages.
For the CNN (configs/svhn_cnn.py) the layers are the stages, so nothing
changes there. The held Grams grow with the unit count: at N = 10,000,
11.6 GB per ResNet-18 model, about 40 GB for three models and the feature
blocks. P1 compares only the CNN and ResNet-18 with CKA; ResNet-34 and
ResNet-50 (P2's models) would need 72 and 115 GB (forward_batch=500), and
the analyses refuse (one line, before any Gram is formed) what the device
cannot hold (see memjax/analysis/similarity/cka_over_training.py).
"""

from memjax.experiment import base_config

P2_RATIOS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.375, 0.5)
# P1: layer convergence, noisy-vs-clean CKA over training, CKA heatmaps; P2: stitching, one-stage fine-tuning.
P1_P2_ANALYSES = ('convergence', 'noisy_vs_clean', 'cka_matrix', 'stitching', 'finetune')


def random_label_sweep(data_name: str, model_name: str, ratios: tuple = P2_RATIOS):
    c = base_config()
    c.data.source = 'tfds'
    c.data.name = data_name
    c.data.val_size = 5000
    c.noise.ratios = ratios
    c.noise.mode = 'random'
    c.model.name = model_name
    c.model.dtype = 'bfloat16'
    c.train.epochs = 200
    c.train.batch_size = 128
    c.train.learning_rate = 0.1
    c.train.schedule = 'cosine'
    c.train.weight_decay = 5e-4
    c.train.stop_accuracy = 0.99
    c.checkpoint.every = 5
    paper_cka(c)
    return c


def paper_cka(c) -> None:
    """P1's CKA: biased linear, full batch (blockwise), per layer, on the whole 10,000-image test split
    (see the module doc)."""
    c.analysis.cka.split = 'test'
    c.analysis.cka.num_examples = 10000
    c.analysis.cka.estimator = 'linear'
    c.analysis.cka.minibatch_size = None
    c.analysis.cka.granularity = 'layer'
