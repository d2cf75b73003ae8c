"""P2: ResNet-34 on CIFAR-100 (critical depths shift deeper than on CIFAR-10).

Random-label noise, trained until 99% training accuracy; the shared recipe
is in memjax/paper_settings.py.

Command:
    python -m memjax.main --config=configs/cifar100_r34.py --workdir=runs/cifar100_r34 \
        --config.data.data_dir=$HOME/tensorflow_datasets
Expected time on one H100: about an hour in bfloat16 (8 replicas x ~7 GFLOP per training image,
up to 200 epochs; an estimate from the FLOP count at ~30% of peak, not a
measurement; replicas stop as they converge).
"""

from memjax.paper_settings import P2_RATIOS, random_label_sweep


def get_config():
    return random_label_sweep('cifar100', 'resnet34', P2_RATIOS)
