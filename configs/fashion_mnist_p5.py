"""P5 on a CPU: manifold geometry of memorization on Fashion-MNIST, offline.

The small, offline version of configs/cifar10_r18_p5.py (Stephenson et al.,
ICLR 2021): the small CNN (width 16) on a 4,000-image subset of Fashion-MNIST,
one clean replica and one with half of its labels relabelled at random
(`noise.mode='random'`: a new label uniform over the classes, where P5 speaks
of "permuted" labels; see configs/cifar10_r18_p5.py), trained with a
40-epoch one-cycle schedule (the ResNet-18 config: a 200-epoch cosine) until
it reaches 99% training accuracy (`train.stop_accuracy`). Then MFTMA per
stage at four kept epochs for the
three kinds of class manifolds (unpermuted, permuted, restored; 10 classes x
50 examples): do the permuted manifolds' radius and dimension shrink in the
deeper layers late in training while early layers barely change? And P5's
rewinding result: rewinding the last k stages (the units the manifolds are
measured on) to an early epoch restores test accuracy (`rewinding`, last_k).

Command (the data comes from Debian's dataset-fashion-mnist package):
    python -m memjax.main --config=configs/fashion_mnist_p5.py --workdir=runs/fashion_mnist_p5
Expected time: about 15 minutes on a 2-core CPU, analyses included.
"""

from memjax.experiment import apply_variant, base_config


def get_config(arg=None):
    c = base_config()
    c.data.source = 'raw'
    c.data.name = 'fashion_mnist'
    c.data.num_train = 4000
    c.data.val_size = 1000
    c.data.num_test = 2000
    c.noise.ratios = (0.0, 0.5)
    c.noise.mode = 'random'
    c.model.name = 'cnn'
    c.model.width = 16
    c.train.epochs = 40
    c.train.learning_rate = 0.05
    c.train.schedule = 'onecycle'
    c.train.peak_epoch = 8.0
    c.checkpoint.every = 2
    c.analyses = ('manifolds', 'rewinding')
    c.analysis.rewinding.granularity = 'stage'  # the units the manifolds are measured on (P5)
    c.analysis.manifolds.examples_per_class = 50
    c.analysis.manifolds.num_epochs = 4
    c.analysis.rewinding.num_train = 2000
    return apply_variant(c, arg)
