"""CIFAR-style ResNets (3x3 stem, stride 1, no max-pool) and the ResNet-9 of P3.

ResNet-18/34/50 stages are `stem, layer1.0, ..., layer4.{n-1}, head`, one stage
per residual block as the papers name them (torchvision's layout); `head` is
global average pooling and the linear classifier. Widths are w, 2w, 4w, 8w
(w = 64 by default); layers 2-4 halve the resolution in their first block.

ResNet-32 is He et al.'s CIFAR ResNet (2016, section 4.2; P4's third
architecture): stages `stem` (3x3 conv w + BatchNorm + ReLU), `layer1.0` ..
`layer1.4`, `layer2.0` .. `layer2.4`, `layer3.0` .. `layer3.4` (basic blocks of
widths w, 2w, 4w; w = 16), `head` (global average pool, linear). Its shortcuts
are He et al.'s option A: identity, and where the shape changes a stride-2
subsampling with zero-padded channels (no parameters; 464,154 parameters for
10 classes, the paper's 0.46M).

ResNet-9 is the network of P3's code (pratyushmaini/localizing-memorization,
models.py `ResNet9`): stages `layer1` (conv 64), `layer2` (conv 5x5 stride 2,
128), `layer3` (residual block 128: x + ConvBN(ConvBN(x)), no ReLU after the
sum), `layer4` (conv 256 + 2x2 max-pool, rounding down as PyTorch's),
`layer5` (residual block 256), `layer6` (conv 128, no padding), `head`
(global max-pool, linear without bias, x0.2). Its 9 layers (8 convs with
BatchNorm, the linear layer) are P3's 9 layer groups. Initialisation is
memjax's kaiming fan_out, not PyTorch's default (a documented difference).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from memjax.models.layers import ConvBN, PoolDense, batch_norm, conv_init, layer_module
from memjax.models.stages import StagedModel


@layer_module
class Shortcut(nn.Module):
    """1x1 conv + BatchNorm projection of a block that changes shape (a layer: `layer2.0.shortcut`)."""

    features: int
    stride: int
    dtype: Any

    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Conv(self.features, (1, 1), strides=self.stride, use_bias=False,
                    dtype=self.dtype, kernel_init=conv_init, name='conv')(x)
        return batch_norm(train, self.dtype, name='bn')(x)


def shortcut(x, features: int, stride: int, dtype: Any, train: bool):
    """The skip path of a block (called inside its compact __call__): identity when the
    shape is kept, else the `Shortcut` projection (named 'shortcut')."""
    if stride == 1 and x.shape[-1] == features:
        return x
    return Shortcut(features, stride, dtype, name='shortcut')(x, train)


def pad_shortcut(x, features: int, stride: int):
    """He et al.'s option A shortcut, no parameters: `[B,H,W,C] -> [B,ceil(H/s),ceil(W/s),features]`
    by subsampling every `stride`-th pixel and zero-padding the channels on both sides."""
    if stride > 1:
        x = x[:, ::stride, ::stride, :]
    extra = features - x.shape[-1]
    if extra > 0:
        x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (extra // 2, extra - extra // 2)))
    return x


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection: `[B,H,W,C] -> [B,H/s,W/s,features]`.

    `zero_pad_shortcut`: option A shortcut (`pad_shortcut`, ResNet-32) instead of
    the 1x1 conv projection where the shape changes.
    """

    features: int
    stride: int = 1
    dtype: Any = jnp.float32
    zero_pad_shortcut: bool = False

    @nn.compact
    def __call__(self, x, train: bool = False):
        y = ConvBN(self.features, stride=self.stride, dtype=self.dtype, name='conv_bn1')(x, train)
        y = ConvBN(self.features, relu=False, dtype=self.dtype, name='conv_bn2')(y, train)
        if self.zero_pad_shortcut:
            return nn.relu(y + pad_shortcut(x, self.features, self.stride))
        return nn.relu(y + shortcut(x, self.features, self.stride, self.dtype, train))


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride) -> 1x1 (4x wider) with a residual connection."""

    features: int
    stride: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        out = 4 * self.features
        y = ConvBN(self.features, kernel=1, dtype=self.dtype, name='conv_bn1')(x, train)
        y = ConvBN(self.features, stride=self.stride, dtype=self.dtype, name='conv_bn2')(y, train)
        y = ConvBN(out, kernel=1, relu=False, dtype=self.dtype, name='conv_bn3')(y, train)
        return nn.relu(y + shortcut(x, out, self.stride, self.dtype, train))


class Residual(nn.Module):
    """ResNet-9's residual block: x + ConvBN(ConvBN(x)), width unchanged."""

    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        y = ConvBN(self.features, dtype=self.dtype, name='conv_bn1')(x, train)
        y = ConvBN(self.features, dtype=self.dtype, name='conv_bn2')(y, train)
        return x + y


_BLOCKS = {
    'resnet18': (BasicBlock, (2, 2, 2, 2)),
    'resnet34': (BasicBlock, (3, 4, 6, 3)),
    'resnet50': (Bottleneck, (3, 4, 6, 3)),
}


def resnet(name: str, num_classes: int, width: int = 64, dtype: Any = jnp.float32) -> StagedModel:
    """ResNet-18/34/50, CIFAR variant. `name` is one of `_BLOCKS`."""
    block, counts = _BLOCKS[name]
    stages = [('stem', ConvBN(width, dtype=dtype))]
    for layer, count in enumerate(counts):
        for index in range(count):
            stride = 2 if layer > 0 and index == 0 else 1
            stages.append((f'layer{layer + 1}.{index}',
                           block(width * 2 ** layer, stride=stride, dtype=dtype)))
    stages.append(('head', PoolDense(num_classes, dtype=dtype)))
    return StagedModel(name, tuple(stages), num_classes, dtype)


def resnet32(num_classes: int, width: int = 16, dtype: Any = jnp.float32) -> StagedModel:
    """He et al.'s CIFAR ResNet-32: 3 groups x 5 basic blocks, widths w, 2w, 4w (w = 16).

    Stage outputs on 32x32 inputs: `[B,32,32,w]` (stem, layer1.x), `[B,16,16,2w]`,
    `[B,8,8,4w]`, `[B,K]` (head); on 28x28: 28, 14, 7 pixels.
    """
    stages = [('stem', ConvBN(width, dtype=dtype))]
    for group in range(3):
        for index in range(5):
            stride = 2 if group > 0 and index == 0 else 1
            stages.append((f'layer{group + 1}.{index}',
                           BasicBlock(width * 2 ** group, stride=stride, dtype=dtype, zero_pad_shortcut=True)))
    stages.append(('head', PoolDense(num_classes, dtype=dtype)))
    return StagedModel('resnet32', tuple(stages), num_classes, dtype)


def resnet9(num_classes: int, width: int = 64, dtype: Any = jnp.float32) -> StagedModel:
    """ResNet-9 (DAWNBench/FFCV, as trained by P3); widths scale with `width`/64."""
    w = width
    stages = (
        ('layer1', ConvBN(w, dtype=dtype)),
        ('layer2', ConvBN(2 * w, kernel=5, stride=2, padding=2, dtype=dtype)),
        ('layer3', Residual(2 * w, dtype=dtype)),
        ('layer4', ConvBN(4 * w, pool=True, pool_padding='VALID', dtype=dtype)),
        ('layer5', Residual(4 * w, dtype=dtype)),
        ('layer6', ConvBN(2 * w, padding='VALID', dtype=dtype)),
        ('head', PoolDense(num_classes, pooling='max', scale=0.2, use_bias=False, dtype=dtype)),
    )
    return StagedModel('resnet9', stages, num_classes, dtype)
