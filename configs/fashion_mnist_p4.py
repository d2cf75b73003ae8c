"""P4 on a CPU: memorization dissection on Fashion-MNIST, offline.

The small, offline version of configs/cifar10_vgg11_p4.py (Gu & Tresp 2019):
the small CNN (width 16) on a 2,000-image subset of Fashion-MNIST, true labels
(r = 0), half random (r = 0.5) and all random labels (r = 1), two seeds each,
SGD with a constant learning rate 0.01 (momentum 0.9, batch 128) as P4, weight
decay 1e-4 on true labels and none on random labels (P4), every seed of a
ratio trained on the same relabelled set X_R (P4 section 4), the input-gradient
magnitude G recorded every epoch as P4 defines it (w.r.t. the normalised input,
training mode, every training example). Then: accuracy and
G per epoch (P4 Figs. 1/4: is there a "hunting" stage of small G before
random labels are fitted?), a DCGAN trained on the run's images, and the
function dissimilarity between every pair of replicas (P4 Figs. 2, 3, 5: are
models trained on true labels more alike than models that memorized random
labels, and does dissimilarity grow with the noise level?), at reduced sizes
(a DCGAN of width 32 trained 10 epochs, 8 seeds x 150 ascent iterations,
instead of width 64, 30 epochs and 100 x 1000).

Command (the data comes from Debian's dataset-fashion-mnist package):
    python -m memjax.main --config=configs/fashion_mnist_p4.py --workdir=runs/fashion_mnist_p4
Expected time: training took 92 min and the analyses about 16 min (the DCGAN
6.5 min) on a heavily loaded, shared 2-core CPU (2026-12-06, with
--config.train.strategy=loop); an unloaded one takes a fraction of that (a
width-64 DCGAN took 2.5 min per epoch there, hence the smaller generator here).
"""

from memjax.experiment import apply_variant, base_config


def get_config(arg=None):
    c = base_config()
    c.data.source = 'raw'
    c.data.name = 'fashion_mnist'
    c.data.num_train = 2000
    c.data.val_size = 500
    c.data.num_test = 1000
    c.noise.ratios = (0.0, 0.5, 1.0)
    c.noise.mode = 'random'
    c.noise.shared_across_seeds = True  # P4 section 4: all seeds of a ratio train on one X_R
    c.seeds = (0, 1)
    c.model.name = 'cnn'
    c.model.width = 16
    c.train.epochs = 60
    c.train.batch_size = 128
    c.train.learning_rate = 0.01
    c.train.schedule = 'constant'
    c.train.momentum = 0.9
    c.train.weight_decay = 1e-4
    c.train.weight_decay_by_ratio = ((0.5, 0.0), (1.0, 0.0))
    c.train.input_gradients = True
    c.train.input_gradient_definition = 'train_normalised'  # P4 section 2: the model's input, training mode
    c.train.input_gradient_examples = 0  # every training example (P4)
    c.checkpoint.every = 10
    c.analyses = ('input_gradients', 'dissimilarity')
    c.analysis.input_gradients.num_examples = 0  # from checkpoints too: every training example (P4)
    c.analysis.dissimilarity.generator_epochs = 10
    c.analysis.dissimilarity.generator_width = 32
    c.analysis.dissimilarity.num_seeds = 8
    c.analysis.dissimilarity.iterations = 150
    return apply_variant(c, arg)
