"""P1 and P2: ResNet-18 on CIFAR-10, r in {0, 5, 10, 15, 20, 25, 37.5, 50, 67.5}%.

Random-label noise, trained until 99% training accuracy; the shared recipe
is in memjax/paper_settings.py. Then the P1/P2 analyses: CKA over training,
noisy-vs-clean CKA, CKA heatmaps, stitching with critical depths, one-stage
fine-tuning.
CKA is P1's estimator (biased linear, full batch on the 10,000 test images)
per layer (analysis.cka.granularity='layer', set in paper_cka): P1's Fig. 1
is CKA against each of ResNet-18's 21 conv/linear layers, inside the
residual blocks, and each block's output, with dashed lines between residual
groups; the per-block view is --config.analysis.cka.granularity=stage. The
Grams take 11.6 GB per model (29 units x 10,000^2 x 4 bytes), three models
at a time, and the feature blocks: about 40 GB of device memory.
The smoke variant (`--config=configs/cifar10_r18.py:smoke`) is a tiny synthetic run of the
same analyses that finishes in seconds on a CPU (the Colab notebooks' CI uses it).

Command:
    python -m memjax.main --config=configs/cifar10_r18.py --workdir=runs/cifar10_r18 \
        --config.data.data_dir=$HOME/tensorflow_datasets
Expected time on one H100: about an hour in bfloat16 (9 replicas x 3.3 GFLOP per training image,
up to 200 epochs; an estimate from the FLOP count at ~30% of peak, not a
measurement; replicas stop as they converge), analyses not included.
"""

from memjax.experiment import apply_variant
from memjax.paper_settings import P1_P2_ANALYSES, P2_RATIOS, random_label_sweep


def get_config(arg=None):
    c = random_label_sweep('cifar10', 'resnet18', P2_RATIOS + (0.675,))
    c.analyses = P1_P2_ANALYSES
    return apply_variant(c, arg)
