"""P3 on a CPU: where is memorization localized? Fashion-MNIST, offline, every P3 analysis.

The small, offline version of configs/cifar10_r9.py (Maini et al., ICML 2023):
the small CNN (width 16; a ResNet-9 of a width that memorizes is too slow
for a 2-core CPU, use configs/cifar10_r9.py on a GPU) on a 4,000-image subset of Fashion-MNIST with 10%
of the labels changed to a random WRONG class, two seeds, SGD with a one-cycle
schedule (peak 0.1), trained for a fixed 30 epochs with gradient accounting
recorded during training. Then: gradient accounting figures (P3 Figs. 1-2),
layer rewinding (Fig. 3, plus the last k stages), layer retraining on clean
examples (Fig. 4), the critical-neuron search (Fig. 5) and example-tied
dropout against standard dropout and a sparse network (Tables 1 and 3), all
at reduced sizes (see the analysis keys below), on P3's layer groups (for
this CNN its 7 layers).

Command (the data comes from Debian's dataset-fashion-mnist package):
    python -m memjax.main --config=configs/fashion_mnist_p3.py --workdir=runs/fashion_mnist_p3
Expected time: about 45 minutes on a 2-core CPU (7 of training, the rest the analyses; see README).
"""

from memjax.experiment import apply_variant, base_config


def get_config(arg=None):
    c = base_config()
    c.data.source = 'raw'
    c.data.name = 'fashion_mnist'
    c.data.num_train = 4000
    c.data.val_size = 1000
    c.data.num_test = 2000
    c.noise.ratios = (0.1,)
    c.noise.mode = 'incorrect'
    c.seeds = (0, 1)
    c.model.name = 'cnn'
    c.model.width = 16
    c.train.epochs = 30
    c.train.batch_size = 128
    c.train.learning_rate = 0.1
    c.train.schedule = 'onecycle'
    c.train.peak_epoch = 8.0
    c.train.weight_decay = 5e-4
    c.train.stop_accuracy = None
    c.train.gradient_accounting = True
    c.analyses = ('gradients', 'rewinding', 'retraining', 'neurons', 'example_tied')
    c.analysis.gradients.window = (16, 20)  # P3 Fig. 1's window: the 16th-20th epochs
    c.analysis.rewinding.epochs = (0, 5, 10, 15, 20, 30)
    c.analysis.rewinding.num_train = 2000
    c.analysis.rewinding.num_test = 1000
    c.analysis.retraining.epochs = 5
    c.analysis.retraining.peak_epoch = 2.0
    c.analysis.retraining.num_train = 2000
    c.analysis.retraining.batch_size = 512  # P3
    c.analysis.retraining.batchnorm = 'live'  # P3: every BatchNorm updates its running statistics
    c.analysis.neurons.num_clean = 24
    c.analysis.neurons.num_noisy = 24
    c.analysis.neurons.max_neurons = 20
    return apply_variant(c, arg)
