"""Tiny configs and runs shared by the tests."""

from __future__ import annotations

import os

from memjax.experiment import base_config


def xla_flags(devices: int) -> str:
    """XLA_FLAGS for a subprocess that sees `devices` CPU devices, keeping the suite's compiler flags (conftest)."""
    return ' '.join(f for f in (os.environ.get('XLA_FLAGS', ''), f'--xla_force_host_platform_device_count={devices}')
                    if f)


def tiny_config(**overrides):
    """A synthetic run that trains in seconds on a CPU: 8x8x1 images, 4 classes,
    a CNN of width 4, replicas r = 0 and 0.5."""
    c = base_config()
    c.data.source = 'synthetic'
    c.data.num_train = 64
    c.data.val_size = 16
    c.data.num_test = 32
    c.data.image_shape = (8, 8, 1)
    c.data.num_classes = 4
    c.noise.ratios = (0.0, 0.5)
    c.model.name = 'cnn'
    c.model.width = 4
    c.train.epochs = 3
    c.train.batch_size = 16
    c.train.learning_rate = 0.05
    c.train.schedule = 'constant'
    c.train.strategy = 'loop'
    c.train.eval_batch_size = 64
    c.checkpoint.async_save = False
    return apply_overrides(c, overrides)


def apply_overrides(c, overrides: dict):
    """`c` with dotted keys set ({'train.epochs': 2} as --config.train.epochs=2 would)."""
    for key, value in overrides.items():
        node = c
        *path, last = key.split('.')
        for part in path:
            node = node[part]
        node[last] = value
    return c
