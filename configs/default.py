"""Default job: memorization of label noise on real Fashion-MNIST, offline, on a CPU.

Reproduces the basic P1/P2 setting at small scale: the small CNN (3 conv + 4
fully connected) trained on a 4,000-image subset of Fashion-MNIST with noise
ratios r = 0, 0.2, 0.5 (random labels) until each replica fits its own noisy
training labels. The summary table shows memorization (noisy replicas reach
high accuracy on their relabelled examples against the noisy labels) while
test accuracy falls as r grows. Then the analyses run on the trained replicas:
CKA over training (P1 Figs. 1, 3), CKA heatmaps, stitching in both directions
with the critical depths (P2), and one-stage fine-tuning (P2 appendix).

Replicas are independent models (own initialisation, data order and
augmentation per (ratio, seed); `train.shared_start=False`), as the papers
trained one model per noise ratio; a shared start would make noisy and clean
models identical at epoch 0 and inflate their early-layer CKA and stitching.

Command (the data comes from Debian's dataset-fashion-mnist package):
    python -m memjax.main --config=configs/default.py --workdir=runs/default
The smoke variant (`--config=configs/default.py:smoke`) is a tiny synthetic run of the
same analyses that finishes in seconds on a CPU (the Colab notebooks' CI uses it).
Expected time: under 10 minutes on a 2-core CPU, analyses included (measured: see README).
"""

from memjax.experiment import apply_variant, base_config


def get_config(arg=None):
    c = base_config()
    c.data.source = 'raw'
    c.data.name = 'fashion_mnist'
    c.data.num_train = 4000
    c.data.val_size = 1000
    c.data.num_test = 2000
    c.noise.ratios = (0.0, 0.2, 0.5)
    c.noise.mode = 'random'
    c.seeds = (0,)
    c.model.name = 'cnn'
    c.model.width = 16
    c.train.epochs = 40
    c.train.batch_size = 128
    c.train.learning_rate = 0.05
    c.train.schedule = 'onecycle'
    c.train.peak_epoch = 8.0
    c.train.weight_decay = 5e-4
    c.train.stop_accuracy = 0.99
    # P1: layer convergence, noisy-vs-clean CKA over training, stage x stage heatmaps;
    # P2: stitching in both directions with critical depths, and one-stage fine-tuning.
    c.analyses = ('convergence', 'noisy_vs_clean', 'cka_matrix', 'stitching', 'finetune')
    c.analysis.cka.split = 'test'
    c.analysis.cka.num_examples = 1000
    c.analysis.stitching.epochs = 10
    c.analysis.finetune.epochs = 3
    return apply_variant(c, arg)
