"""P4 (Gu & Tresp 2019, arXiv:1911.09537): VGG-11 on CIFAR-10, true vs random labels.

P4's setting: VGG-11, SGD with a constant learning rate 0.01, momentum 0.9,
batch 128, 100 epochs, weight decay 1e-4 on true labels and none on random
labels (`train.weight_decay_by_ratio`), r in {0, 1} with three seeds. The
input-gradient magnitude G is recorded every epoch as P4 defines it: w.r.t.
the normalised input, in training mode, over every training example with its
training label (`train.input_gradient_definition='train_normalised'`); every
seed of a ratio trains on the same relabelled set X_R (P4 section 4:
`noise.shared_across_seeds=True`).
Analyses: G per epoch (Figs. 1/4) and the function dissimilarity of every pair
of replicas through a DCGAN trained 30 epochs on CIFAR-10 (Figs. 2, 3),
100 seeds x 1000 ascent iterations (P4's values). P4 also compares with VGG-13
and ResNet-32 runs: train those with `--config.model.name=vgg13` / `resnet32`
in other work directories and list them in `analysis.dissimilarity.other_runs`
(with the same data and noise keys they train on the same X_R: the rows'
`same_labels` says so).
The noise levels of Fig. 5: `get_config('noise_levels')` (`--config=configs/cifar10_vgg11_p4.py:noise_levels`).
The smoke variant (`--config=configs/cifar10_vgg11_p4.py:smoke`) is a tiny synthetic run of the
same analyses that finishes in seconds on a CPU (the Colab notebooks' CI uses it).

Command:
    python -m memjax.main --config=configs/cifar10_vgg11_p4.py --workdir=runs/cifar10_vgg11_p4 \
        --config.data.data_dir=$HOME/tensorflow_datasets
Expected time on one H100: not measured (no GPU has been available yet); `python -m memjax.plan` estimates it.
"""

from memjax.experiment import apply_variant, base_config


def get_config(arg=None):
    variants = [v for v in (arg or '').split(',') if v]  # e.g. 'noise_levels,smoke'
    variant = 'noise_levels' if 'noise_levels' in variants else ''
    c = base_config()
    c.data.source = 'tfds'
    c.data.name = 'cifar10'
    c.data.val_size = 5000
    c.noise.ratios = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0) if variant == 'noise_levels' else (0.0, 1.0)
    c.noise.mode = 'random'
    c.noise.shared_across_seeds = True  # P4 section 4: all seeds of a ratio train on one X_R
    c.seeds = (0, 1, 2)
    c.model.name = 'vgg11'
    c.train.epochs = 100
    c.train.batch_size = 128
    c.train.learning_rate = 0.01
    c.train.schedule = 'constant'
    c.train.momentum = 0.9
    c.train.weight_decay = 1e-4
    c.train.weight_decay_by_ratio = tuple((r, 0.0) for r in c.noise.ratios if r > 0)
    c.train.stop_accuracy = None  # P4 trains a fixed 100 epochs
    c.train.input_gradients = True
    c.train.input_gradient_definition = 'train_normalised'  # P4 section 2: the model's input, training mode
    c.train.input_gradient_examples = 0  # every training example (P4)
    c.checkpoint.every = 10
    c.analyses = ('input_gradients', 'dissimilarity')
    c.analysis.input_gradients.num_examples = 0  # from checkpoints too: every training example (P4)
    for v in variants:
        c = apply_variant(c, v, own=('noise_levels',))
    return c
