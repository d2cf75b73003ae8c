"""P3 (Maini et al., ICML 2023): ResNet-9 on CIFAR-10 with 10% incorrect-class noise.

The reference setting of "Can neural network memorization be localized?":
ResNet-9, 10% of the training examples relabelled to a random WRONG class
(uniform over the 9 others), SGD (momentum 0.9, weight decay 5e-4), one-cycle
learning rate peaking at 0.1 at epoch 10, 50 epochs (no early stop), batch 512,
3 seeds. Params every epoch, for gradient accounting, rewinding and retraining.
Analyses: P3's gradient accounting, layer rewinding, layer retraining, critical
neurons and example-tied dropout, at their P3 settings.
The smoke variant (`--config=configs/cifar10_r9.py:smoke`) is a tiny synthetic run of the
same analyses that finishes in seconds on a CPU (the Colab notebooks' CI uses it).

Data: tfds `cifar10` prepared as array_record in data_dir (see README, "Data"),
or --config.data.source=raw with cifar-10-python.tar.gz.

Command:
    python -m memjax.main --config=configs/cifar10_r9.py --workdir=runs/cifar10_r9 \
        --config.data.data_dir=$HOME/tensorflow_datasets
Expected time on one H100: about 10 minutes (3 replicas x 50 epochs x 45k images
x ~1.2 GFLOP per training image; an estimate from the FLOP count, not a
measurement) for training; the analyses not measured.
"""

from memjax.experiment import apply_variant, base_config


def get_config(arg=None):
    c = base_config()
    c.data.source = 'tfds'
    c.data.name = 'cifar10'
    c.data.val_size = 5000
    c.noise.ratios = (0.1,)
    c.noise.mode = 'incorrect'
    c.seeds = (0, 1, 2)
    c.model.name = 'resnet9'
    c.train.epochs = 50
    c.train.batch_size = 512
    c.train.learning_rate = 0.1
    c.train.schedule = 'onecycle'
    c.train.peak_epoch = 10.0
    c.train.weight_decay = 5e-4
    c.train.stop_accuracy = None
    c.train.gradient_accounting = True  # P3 section 4 measures the epoch's SGD gradients
    c.checkpoint.every = 1
    c.analyses = ('gradients', 'rewinding', 'retraining', 'neurons', 'example_tied')
    # Every P3 analysis acts on P3's 9 layer groups of ResNet-9 (8 convs with BatchNorm, the linear layer):
    # analysis.<name>.granularity defaults to 'p3_groups'.
    c.analysis.neurons.num_clean = 1000  # P3 section 6.1: 1000 clean and 1000 noisy examples
    c.analysis.neurons.num_noisy = 1000
    c.analysis.neurons.max_neurons = 100  # P3's search has no cap (clean mean 15.7): keep censoring rare
    c.analysis.neurons.reference_batch = 512  # P3's code: the rest of a 512-example batch
    c.analysis.neurons.accuracy_examples = 5000  # P3's code: the whole training set
    return apply_variant(c, arg)
