"""Settings shared by the P1/P2 ResNet configs (configs/cifar*_r*.py).

P1/P2 train CIFAR-style ResNets on CIFAR-10/100 with random-label noise
(a random label may equal the true one) until each model's training accuracy
exceeds 99%. The papers give no optimizer details; these are the standard
CIFAR recipe: SGD with momentum 0.9, learning rate 0.1 with cosine decay over
at most 200 epochs, weight decay 5e-4, batch 128, bfloat16 compute. Params
are kept every 5 epochs plus the first and last (R ResNets every epoch would
be tens of GB); --config.checkpoint.every=1 gives full-resolution curves.
Data: tfds prepared as array_record in data_dir (README, "Data"), or
--config.data.source=raw with the python-version tarball.
"""

from memjax.experiment import base_config

P2_RATIOS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.375, 0.5)
# P1: layer convergence, noisy-vs-clean CKA over training, CKA heatmaps; P2: stitching, one-stage fine-tuning.
P1_P2_ANALYSES = ('convergence', 'noisy_vs_clean', 'cka_matrix', 'stitching', 'finetune')


def random_label_sweep(data_name: str, model_name: str, ratios: tuple = P2_RATIOS):
    c = base_config()
    c.data.source = 'tfds'
    c.data.name = data_name
    c.data.val_size = 5000
    c.noise.ratios = ratios
    c.noise.mode = 'random'
    c.model.name = model_name
    c.model.dtype = 'bfloat16'
    c.train.epochs = 200
    c.train.batch_size = 128
    c.train.learning_rate = 0.1
    c.train.schedule = 'cosine'
    c.train.weight_decay = 5e-4
    c.train.stop_accuracy = 0.99
    c.checkpoint.every = 5
    return c
