"""He et al.'s CIFAR ResNet-32 (P4's third architecture)."""

import jax
import numpy as np
import pytest

from memjax.models import build_model


def test_stage_names_and_count():
    model = build_model('resnet32', 10, width=4)
    names = model.stage_names
    assert len(names) == 1 + 15 + 1
    assert names[0] == 'stem' and names[-1] == 'head'
    assert names[1:6] == tuple(f'layer1.{i}' for i in range(5))
    assert names[-2] == 'layer3.4'


@pytest.mark.parametrize('shape, sizes', [((32, 32, 3), (32, 16, 8)), ((28, 28, 1), (28, 14, 7))])
def test_stage_shapes(shape, sizes):
    model = build_model('resnet32', 10, width=4)
    variables = model.init(jax.random.PRNGKey(0), shape)
    run = model.apply(variables, jax.random.normal(jax.random.PRNGKey(1), (2, *shape)), capture=True)
    assert run.output.shape == (2, 10)
    for group, (size, width) in enumerate(zip(sizes, (4, 8, 16))):
        for index in range(5):
            assert run.features[f'layer{group + 1}.{index}'].shape == (2, size, size, width)
    # Option A shortcuts have no parameters; only the stem, convs, BatchNorms and the head do.
    assert set(variables['params']['layer2.0']) == {'conv_bn1', 'conv_bn2'}
    # The traced-once shapes are those of the computed values, for this input shape.
    assert model.stage_output_shapes(shape) == {k: v.shape[1:] for k, v in run.features.items()}
    assert list(model.stage_output_shapes(shape)) == list(model.stage_names)
    shapes = model.variable_shapes(shape)
    assert jax.tree_util.tree_map(lambda v: (v.shape, v.dtype), shapes) == \
        jax.tree_util.tree_map(lambda v: (v.shape, v.dtype), variables)
    shapes['params'].clear()  # a caller's edit does not reach the next caller
    assert model.variable_shapes(shape)['params']


def test_default_width_parameter_count_is_0_46m():
    model = build_model('resnet32', 10)
    shapes = jax.eval_shape(lambda k: model.init(k, (32, 32, 3)), jax.random.PRNGKey(0))
    total = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(shapes['params']))
    assert total == 464_154  # He et al. 2016, Table 6: 0.46M
