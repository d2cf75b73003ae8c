"""P5 (Stephenson et al., ICLR 2021, arXiv:2105.14602): ResNet-18 on CIFAR-10 with permuted labels.

A clean replica and one with half of its training examples relabelled,
trained to fit them, checkpoints every 5 epochs; then MFTMA (capacity, radius,
dimension, center correlation) per stage (the stem, each residual block, the
head) at six kept epochs for the unpermuted, permuted and restored class
manifolds (10 classes x 50 examples, kappa 0, n_t 200: the reference code's
values), and rewinding of the last k of the same stages together to an
earlier epoch (P5's generalization-restoring experiment;
analysis.rewinding.granularity='stage', so "last 1" is the head and "last 2"
the head and layer4.1). The permuted fraction is
`noise.ratios`; P5 varies it, and memjax's default here (0.5) is a choice, not
a value read from the paper. Recipe: memjax/paper_settings.py.

Labels and training, stated plainly: P5 calls the relabelled examples
"permuted"; memjax gives each one a new label drawn uniformly over the 10
classes (`noise.mode='random'`, as P1/P2; it may equal the true label), not a
permutation of the chosen examples' own labels (which would keep their class
counts exactly). The text of P5 available to this project (its summary) does
not say which of the two P5 did. Training is SGD with a 200-epoch cosine
schedule, and each replica stops at 99% training accuracy
(`train.stop_accuracy`); the analyses take that final model.
The smoke variant (`--config=configs/cifar10_r18_p5.py:smoke`) is a tiny synthetic run of the
same analyses that finishes in seconds on a CPU (the Colab notebooks' CI uses it).

Command:
    python -m memjax.main --config=configs/cifar10_r18_p5.py --workdir=runs/cifar10_r18_p5 \
        --config.data.data_dir=$HOME/tensorflow_datasets
Expected time on one H100: not measured (no GPU has been available yet); `python -m memjax.plan` estimates it.
"""

from memjax.experiment import apply_variant
from memjax.paper_settings import random_label_sweep


def get_config(arg=None):
    c = random_label_sweep('cifar10', 'resnet18', (0.0, 0.5))
    c.analyses = ('manifolds', 'rewinding')
    c.analysis.manifolds.num_epochs = 6
    # P5's rewinding and geometry speak of the same layers: rewind the units the manifolds are measured
    # on, one per stage (stem, each residual block, head), not P3's layer groups.
    c.analysis.rewinding.granularity = 'stage'
    return apply_variant(c, arg)
