"""Default job: memorization of label noise on real Fashion-MNIST, offline, on a CPU, in minutes.

A miniature of the basic P1/P2 setting: the small CNN (3 conv + 4 fully
connected, P1/P2's "custom CNN") trained on a 1,000-image subset of
Fashion-MNIST with noise ratios r = 0, 0.2, 0.5 (random labels) until each
replica fits its own noisy training labels (P1/P2: training accuracy > 99%).
The summary table shows memorization (noisy replicas reach high accuracy on
their relabelled examples against the noisy labels) while test accuracy falls
as r grows. Then the analyses run on the trained replicas: CKA over training
(P1 Figs. 1, 3), CKA heatmaps, stitching in both directions with the critical
depths (P2), and one-stage fine-tuning (P2 appendix).

What it trades for a first result within five minutes on 2 CPU cores, set-up
included (measured: see the README):
- 1,000 training images (P1/P2: the full training set), so that the 500
  random labels of r = 0.5 are memorized in under 20 epochs; 1,000 validation
  images train the stitch layers and 1,000 test images measure accuracy.
- Adam (lr 2e-3, one-cycle over 20 epochs, batch 32) instead of the papers'
  SGD: random labels are fitted in about a third of SGD's epochs here (SGD at
  lr 0.05 reached 30% memorization in 15 epochs, Adam 90%).
- Width 16 (the papers give no widths; the P2 configs use 32).
- CKA on 500 test images (P1: the whole test split), stitch layers trained
  5 epochs from their least-squares fit, fine-tuning 2 epochs per stage.
The findings it shows: memorization near 1 for r = 0.2 and 0.5; test accuracy
falling with r; clean-to-noisy stitching at chance (memorization) from a
depth on; noisy-to-clean stitching at chance at depth 1; the first stage
converging before the last; r = 0.5 further from the clean model than r = 0.2
at the last stage.

Replicas are independent models (own initialisation, data order and
augmentation per (ratio, seed); `train.shared_start=False`), as the papers
trained one model per noise ratio; a shared start would make noisy and clean
models identical at epoch 0 and inflate their early-layer CKA and stitching.

Command (the data comes from Debian's dataset-fashion-mnist package):
    python -m memjax.main --config=configs/default.py --workdir=runs/default
The smoke variant (`--config=configs/default.py:smoke`) is a tiny synthetic run of the
same analyses that finishes in seconds on a CPU (the Colab notebooks' CI uses it).
Expected time: about 2 minutes on an idle 2-core CPU, set-up included (measured 2026-12-06:
2 min 8 s in a fresh clone; training 45 s, analyses 75 s, of which stitching 41 s).
"""

from memjax.experiment import apply_variant, base_config

REFERENCE_TIME = (5.6, 120.0)  # measured 2026-12-06 (README: "Two commands for a fresh machine")


def get_config(arg=None):
    c = base_config()
    c.data.source = 'raw'
    c.data.name = 'fashion_mnist'
    c.data.num_train = 1000
    c.data.val_size = 1000
    c.data.num_test = 1000
    c.noise.ratios = (0.0, 0.2, 0.5)
    c.noise.mode = 'random'
    c.seeds = (0,)
    c.model.name = 'cnn'
    c.model.width = 16
    c.train.epochs = 20
    c.train.batch_size = 32
    c.train.optimizer = 'adam'
    c.train.learning_rate = 2e-3
    c.train.schedule = 'onecycle'
    c.train.peak_epoch = 3.0
    c.train.weight_decay = 5e-4
    c.train.stop_accuracy = 0.99
    # (epoch 1 s, whole job s) on the reference machine: 2-core x86_64 CPU, idle (see the README)
    c.train.reference_time = REFERENCE_TIME
    # P1: layer convergence, noisy-vs-clean CKA over training, stage x stage heatmaps;
    # P2: stitching in both directions with critical depths, and one-stage fine-tuning.
    c.analyses = ('convergence', 'noisy_vs_clean', 'cka_matrix', 'stitching', 'finetune')
    c.analysis.cka.split = 'test'
    c.analysis.cka.num_examples = 500
    c.analysis.stitching.epochs = 5
    c.analysis.finetune.epochs = 2
    return apply_variant(c, arg)
