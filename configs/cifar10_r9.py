"""P3 (Maini et al., ICML 2023): ResNet-9 on CIFAR-10 with 10% incorrect-class noise, and P3's other settings.

The reference setting of "Can neural network memorization be localized?":
ResNet-9, 10% of the training examples relabelled to a random WRONG class
(uniform over the 9 others), SGD (momentum 0.9, weight decay 5e-4), one-cycle
learning rate peaking at 0.1 at epoch 10, 50 epochs (no early stop), batch 512,
3 seeds. Params every epoch, for gradient accounting, rewinding and retraining.
Analyses: P3's gradient accounting (Fig. 1 averages P3's epochs 15-20),
layer rewinding, layer retraining, critical neurons and example-tied dropout,
at their P3 settings. P3's numbers to compare with: Table 1 (clean / noisy /
test accuracy, before -> after dropping the memorization neurons)
99.9 / 99.3 / 79.3 -> 90.8 / 3.1 / 82.7; Table 3 (clean / noisy) standard
dropout 100 / 99.5, sparse network 100 / 99.8; critical neurons: 15.7 (clean)
vs 5.1 (noisy) on average, AUC 0.89 for detecting mislabelled examples;
Fig. 2: cosine of the clean and noisy gradients below -0.75 in every layer
during epochs 10-30.

P3's other settings, as variants (comma-separated, with smoke too:
`--config=configs/cifar10_r9.py:svhn,resnet50`, `:mnist,smoke`):
- `mnist`: MNIST (28x28x1). P3 Table 1: 100 / 100 / 99.0 -> 99.2 / 0.1 / 99.3;
  retraining (P3 Fig. 4b): layer 5 retrained on clean examples passes 70%
  memorization accuracy during retraining but ends below 10%.
- `svhn`: SVHN (tfds `svhn_cropped`). P3 Table 1: 99.9 / 99.6 / 89.5 ->
  95.8 / 1.4 / 89.6.
  On MNIST and SVHN the analyses are those P3 reports there: gradient
  accounting, rewinding, retraining and example-tied dropout (P3 runs the
  critical-neuron search on CIFAR-10 only).
- `resnet50`: ResNet-50, with gradient accounting and rewinding (P3 runs the
  other analyses on ResNet-9 only) on P3's 6 groups (stem, layer1..4,
  classifier). P3 gives figures only (Fig. 3, appendix Figs. 12-17); its
  appendix B.1: on CIFAR-10 rewinding layer 3 matters most, on MNIST layer 4.
  P3's ResNet-50 is torchvision's, with the ImageNet stem (7x7 stride-2 conv
  and max-pool) on 32x32 inputs; memjax's is the CIFAR-style ResNet-50 (3x3
  stem).
- `vit`: P3's ViT-small (`vit_small`: patch 2, dim 512, depth 6, 8 heads,
  dropout 0.1), gradient accounting and rewinding on P3's 8 groups; figures
  only in P3 (Fig. 3c, appendix Figs. 12-17).
The smoke variant (`--config=configs/cifar10_r9.py:smoke`) is a tiny synthetic run of the
same analyses that finishes in seconds on a CPU (the Colab notebooks' CI uses it).

Data: tfds `cifar10` (`mnist`, `svhn_cropped`) prepared as array_record in
data_dir (see README, "Data"), or --config.data.source=raw with the raw files.

Commands:
    python -m memjax.main --config=configs/cifar10_r9.py --workdir=runs/cifar10_r9 \
        --config.data.data_dir=$HOME/tensorflow_datasets
    python -m memjax.main --config=configs/cifar10_r9.py:mnist --workdir=runs/mnist_r9 \
        --config.data.data_dir=$HOME/tensorflow_datasets
    python -m memjax.main --config=configs/cifar10_r9.py:svhn --workdir=runs/svhn_r9 \
        --config.data.data_dir=$HOME/tensorflow_datasets
    python -m memjax.main --config=configs/cifar10_r9.py:resnet50 --workdir=runs/cifar10_r50_p3 \
        --config.data.data_dir=$HOME/tensorflow_datasets
    python -m memjax.main --config=configs/cifar10_r9.py:vit --workdir=runs/cifar10_vit_p3 \
        --config.data.data_dir=$HOME/tensorflow_datasets
Expected time on one H100: about 10 minutes (3 replicas x 50 epochs x 45k images
x ~1.2 GFLOP per training image; an estimate from the FLOP count, not a
measurement) for training; the analyses and the variants not measured.
"""

from memjax.errors import ConfigError
from memjax.experiment import apply_variant, base_config

DATASETS = {'mnist': 'mnist', 'svhn': 'svhn_cropped'}
MODELS = {'resnet50': 'resnet50', 'vit': 'vit_small'}


def get_config(arg=None):
    variants = [v for v in (arg or '').split(',') if v]  # e.g. 'svhn,resnet50,smoke'
    data = [v for v in variants if v in DATASETS]
    arch = [v for v in variants if v in MODELS]
    if len(data) > 1 or len(arch) > 1:
        raise ConfigError(f"config variants {arg!r} name more than one data set or architecture; give at most one "
                          f"of {', '.join(DATASETS)} and one of {', '.join(MODELS)}, e.g. 'svhn,resnet50'")
    c = base_config()
    c.data.source = 'tfds'
    c.data.name = DATASETS[data[0]] if data else 'cifar10'
    c.data.val_size = 5000
    c.noise.ratios = (0.1,)
    c.noise.mode = 'incorrect'
    c.seeds = (0, 1, 2)
    c.model.name = MODELS[arch[0]] if arch else 'resnet9'
    c.train.epochs = 50
    c.train.batch_size = 512
    c.train.learning_rate = 0.1
    c.train.schedule = 'onecycle'
    c.train.peak_epoch = 10.0
    c.train.weight_decay = 5e-4
    c.train.stop_accuracy = None
    c.train.gradient_accounting = True  # P3 section 4 measures the epoch's SGD gradients
    c.checkpoint.every = 1
    if arch:  # P3's ResNet-50 and ViT results: gradient accounting and rewinding
        c.analyses = ('gradients', 'rewinding')
    elif data:  # what P3 reports on MNIST and SVHN
        c.analyses = ('gradients', 'rewinding', 'retraining', 'example_tied')
    else:
        # weight_change is not in P3: how far each layer group moves from its initialisation, a free first look
        c.analyses = ('gradients', 'rewinding', 'retraining', 'neurons', 'example_tied', 'weight_change')
    # Every P3 analysis acts on P3's layer groups (ResNet-9: 8 convs with BatchNorm and the linear layer):
    # analysis.<name>.granularity defaults to 'p3_groups'.
    # P3 Fig. 1: "epochs 15-20", its plotter's entries [15:20] of the per-epoch list: the 16th-20th epochs.
    c.analysis.gradients.window = (16, 20)
    c.analysis.neurons.num_clean = 1000  # P3 section 6.1: 1000 clean and 1000 noisy examples
    c.analysis.neurons.num_noisy = 1000
    c.analysis.neurons.max_neurons = 100  # P3's search has no cap (clean mean 15.7): keep censoring rare
    # P3's code: the mean loss over its first training batch of 512 (which holds the example); here 512 random
    # training examples, redrawn every step
    c.analysis.neurons.reference_batch = 512
    # P3's code evaluates the whole training set after each search; 5,000 unsearched examples bound the cost of
    # the 2,000 evaluations here
    c.analysis.neurons.accuracy_examples = 5000
    # analysis.neurons.parallel (None): the examples searched at once are chosen from the device's memory
    # (each runs 5 noisy copies of 513 images forward and backward: a few on a 16 GB TPU, more on an H100)
    for v in variants:
        c = apply_variant(c, v, own=tuple(DATASETS) + tuple(MODELS))
    if 'smoke' in variants:  # its two epochs hold no epoch of P3's window
        c.analysis.gradients.window = (1, c.train.epochs)
    return c
