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

CKA (when P1's analyses are listed) uses the whole test split, as P1 computes
CKA on the test split: analysis.cka.num_examples=10000 with the minibatch
debiased estimator in batches of 1000 (Nguyen, Raghu & Kornblith 2021). The
papers' full-batch biased estimator would need a 10k x 10k Gram per stage
(400 MB each) or 10k x 65k activations per ResNet stage held at once; the
biased estimator cannot be minibatched (it drifts with the batch size, and
memjax refuses it), while the debiased one converges to the same population
quantity without the D/(N+D) inflation of high-dimensional conv maps.

CKA is per layer (analysis.cka.granularity='layer'): P1's Fig. 1 plots CKA
against each conv layer, not each residual block, so a ResNet-18 is compared
at its 21 layers (stem, layer1.0.conv_bn1, ..., layer2.0.shortcut, ...,
head.dense) rather than its 10 stages. For the CNN (configs/svhn_cnn.py) the
layers are the stages, so nothing changes there. The held final Grams grow
with the layer count (0.84 GB per ResNet-18 replica; see
memjax/analysis/similarity/cka_over_training.py).
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
    """P1's CKA per layer on the whole 10,000-image test split in bounded memory (see the module doc)."""
    c.analysis.cka.split = 'test'
    c.analysis.cka.num_examples = 10000
    c.analysis.cka.estimator = 'debiased'
    c.analysis.cka.minibatch_size = 1000
    c.analysis.cka.granularity = 'layer'
