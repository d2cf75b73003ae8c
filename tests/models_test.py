import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memjax.errors import ConfigError
from memjax.models import MODEL_NAMES, build_model

SMALL = {'width': 4}
SMALL_VIT = {'width': 16, 'depth': 2, 'heads': 2}


def small(name, num_classes=5, dtype='float32'):
    return build_model(name, num_classes, dtype=dtype, **(SMALL_VIT if name.startswith('vit') else SMALL))


@pytest.mark.parametrize('shape', [(28, 28, 1), (32, 32, 3)])
@pytest.mark.parametrize('name', MODEL_NAMES)
def test_slices_in_sequence_equal_the_full_forward_pass(name, shape):
    model = small(name)
    variables = model.init(jax.random.PRNGKey(0), shape)
    x = jax.random.normal(jax.random.PRNGKey(1), (3, *shape))
    full = model.apply(variables, x, train=True, capture=True)
    assert full.output.shape == (3, 5)
    assert list(full.features) == list(model.stage_names)
    # Run every stage boundary split: [0, l) then [l, end), in training mode (BatchNorm updates).
    for cut in range(1, model.num_stages):
        first = model.apply(variables, x, train=True, stop=cut)
        second = model.apply({**variables, 'batch_stats': first.batch_stats}, first.output, train=True,
                             start=cut)
        np.testing.assert_array_equal(first.output, full.features[model.stage_names[cut - 1]])
        np.testing.assert_array_equal(second.output, full.output)
        jax.tree_util.tree_map(np.testing.assert_array_equal, second.batch_stats, full.batch_stats)
    # Stage by stage in evaluation mode.
    h = x
    for stage in model.stage_names:
        h = model.apply(variables, h, start=stage, stop=model.stage_index(stage) + 1).output
    np.testing.assert_array_equal(h, model.logits(variables, x))


@pytest.mark.parametrize('name', MODEL_NAMES)
def test_each_stage_owns_its_subtree(name):
    model = small(name)
    variables = model.init(jax.random.PRNGKey(0), (32, 32, 3))
    assert list(variables['params']) == list(model.stage_names)
    assert set(variables['batch_stats']) <= set(model.stage_names)
    other = model.init(jax.random.PRNGKey(9), (32, 32, 3))
    stage = model.stage_names[1]
    swapped = model.replace_stage(variables, stage, model.stage_variables(other, stage))
    for name_ in model.stage_names:
        source = other if name_ == stage else variables
        jax.tree_util.tree_map(np.testing.assert_array_equal, swapped['params'][name_],
                               source['params'][name_])
        if name_ in variables['batch_stats']:
            jax.tree_util.tree_map(np.testing.assert_array_equal, swapped['batch_stats'][name_],
                                   source['batch_stats'][name_])


def test_paper_stage_names():
    assert small('resnet18').stage_names == ('stem', 'layer1.0', 'layer1.1', 'layer2.0', 'layer2.1',
                                             'layer3.0', 'layer3.1', 'layer4.0', 'layer4.1', 'head')
    assert small('cnn').stage_names == ('conv1', 'conv2', 'conv3', 'fc1', 'fc2', 'fc3', 'fc4')
    assert len(small('resnet34').stage_names) == 2 + 16 and len(small('resnet50').stage_names) == 2 + 16
    assert small('vgg11').stage_names[-1] == 'fc' and len(small('vgg13').stage_names) == 11


def test_resnet18_at_paper_width_has_the_known_parameter_count():
    model = build_model('resnet18', 10)
    shapes = jax.eval_shape(lambda k: model.init(k, (32, 32, 3)), jax.random.PRNGKey(0))
    total = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(shapes['params']))
    assert total == 11_173_962  # the CIFAR ResNet-18 of kuangliu/pytorch-cifar


def test_bfloat16_compute_keeps_float32_params_and_logits():
    model = small('cnn', dtype='bfloat16')
    variables = model.init(jax.random.PRNGKey(0), (28, 28, 1))
    assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(variables))
    run = model.apply(variables, jnp.ones((2, 28, 28, 1)), capture=True)
    assert run.output.dtype == jnp.float32 and run.features['conv1'].dtype == jnp.bfloat16


def test_bad_names_are_clear_errors():
    with pytest.raises(ConfigError, match="'resnet7'"):
        build_model('resnet7', 10)
    model = small('cnn')
    with pytest.raises(ConfigError, match="'layer9'.*conv1"):
        model.stage_index('layer9')
