"""P2: ResNet-34 on CIFAR-100 (critical depths shift deeper than on CIFAR-10).

Random-label noise, trained until 99% training accuracy; the shared recipe
is in memjax/paper_settings.py. Then P2's analysis of this model: stitching
in both directions (clean-to-noisy and noisy-to-clean) after every residual
block, with the critical depths l_c^m, l_c^g, l_n^m, l_n^g read off its
curves (P2 sections 4-5). P1 ran no CKA on CIFAR-100 and P2 fine-tuned
ResNet-18 only, so neither is listed.

Command:
    python -m memjax.main --config=configs/cifar100_r34.py --workdir=runs/cifar100_r34 \
        --config.data.data_dir=$HOME/tensorflow_datasets
Expected time on one H100: about an hour in bfloat16 (8 replicas x ~7 GFLOP per training image,
up to 200 epochs; an estimate from the FLOP count at ~30% of peak, not a
measurement; replicas stop as they converge).
"""

from memjax.experiment import apply_variant
from memjax.paper_settings import P2_RATIOS, random_label_sweep


def get_config(arg=None):
    c = random_label_sweep('cifar100', 'resnet34', P2_RATIOS)
    c.analyses = ('stitching',)  # both directions; the critical depths are part of it
    return apply_variant(c, arg)
