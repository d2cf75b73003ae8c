"""The per-layer model API: layer names, capture, masks inside residual branches, units."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from memjax.errors import ConfigError
from memjax.models import MODEL_NAMES, build_model
from memjax.models.layer_index import get_subtree
from memjax.models.units import GRANULARITIES

SMALL = {'width': 4}
SMALL_VIT = {'width': 16, 'depth': 2, 'heads': 2}


def small(name, num_classes=5):
    return build_model(name, num_classes, **(SMALL_VIT if name.startswith('vit') else SMALL))


def _leaf_paths(tree, prefix=()):
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _leaf_paths(value, prefix + (key,))
    else:
        yield prefix


@pytest.mark.parametrize('granularity', GRANULARITIES)
@pytest.mark.parametrize('name', MODEL_NAMES)
def test_every_parameter_belongs_to_exactly_one_unit(name, granularity):
    model = small(name)
    variables = model.init(jax.random.PRNGKey(0), (32, 32, 3))
    owners = {}
    for unit in model.units(granularity):
        for path in unit.paths:
            for leaf in _leaf_paths(get_subtree(variables['params'], path), path):
                assert leaf not in owners, (leaf, unit.name, owners.get(leaf))
                owners[leaf] = unit.name
    assert set(owners) == set(_leaf_paths(variables['params']))


def test_p3_layer_groups_are_the_papers():
    # P3's code (experiments/layer_groups.py): ResNet-9 9 groups (8 convs + linear), ResNet-50 6, ViT blocks + 2.
    assert [u.name for u in small('resnet9').units('p3_groups')] == [
        'layer1', 'layer2', 'layer3.conv_bn1', 'layer3.conv_bn2', 'layer4', 'layer5.conv_bn1', 'layer5.conv_bn2',
        'layer6', 'head.dense']
    r50 = small('resnet50').units('p3_groups')
    assert [u.name for u in r50] == ['stem', 'layer1', 'layer2', 'layer3', 'layer4', 'head.dense']
    assert [p[0] for p in r50[3].paths] == [f'layer3.{i}' for i in range(6)]
    assert [u.name for u in small('vit_small').units('p3_groups')] == ['embed', 'block1', 'block2', 'head']
    r18 = small('resnet18')
    assert 'layer2.0.shortcut' in r18.layer_names and 'layer1.0.shortcut' not in r18.layer_names
    assert r18.layer('layer2.0.shortcut').channels == 8
    with pytest.raises(ConfigError, match='unknown layer'):
        r18.layer('layer9.0.conv_bn1')


def test_a_layer_inside_a_residual_branch_is_captured_and_masked_with_the_skip_path_intact():
    model = small('resnet18')
    variables = model.init(jax.random.PRNGKey(0), (32, 32, 3))
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 32, 32, 3))
    plain = model.apply(variables, x, capture=['stem', 'layer1.0.conv_bn1', 'layer1.0.conv_bn2', 'layer1.0'])
    # The block's output is relu(conv_bn2 + skip): the captured pieces reassemble it.
    np.testing.assert_allclose(plain.features['layer1.0'],
                               jax.nn.relu(plain.features['layer1.0.conv_bn2'] + plain.features['stem']), atol=1e-6)
    mask = jnp.ones(4).at[1].set(0.0).at[2].set(0.5)
    masked = model.apply(variables, x, capture=['stem', 'layer1.0.conv_bn2', 'layer1.0'],
                         masks={'layer1.0.conv_bn2': mask})
    np.testing.assert_allclose(masked.features['layer1.0.conv_bn2'], plain.features['layer1.0.conv_bn2'] * mask,
                               atol=1e-6)
    # Channel 1 of the branch is gone, the skip path's channel 1 is what remains of the block's channel 1.
    np.testing.assert_allclose(masked.features['layer1.0'][..., 1], jax.nn.relu(plain.features['stem'][..., 1]),
                               atol=1e-6)
    np.testing.assert_array_equal(masked.features['stem'], plain.features['stem'])
    # A per-example mask [B, C] on a shortcut, in training mode and under jit.
    per_example = jnp.stack([jnp.ones(8), jnp.zeros(8)])
    run = jax.jit(lambda v, x: model.apply(v, x, train=True, capture=['layer2.0.shortcut'],
                                           masks={'layer2.0.shortcut': per_example}))(variables, x)
    assert run.features['layer2.0.shortcut'].shape == (2, 16, 16, 8)
    assert float(jnp.abs(run.features['layer2.0.shortcut'][1]).max()) == 0.0
    assert float(jnp.abs(run.features['layer2.0.shortcut'][0]).max()) > 0.0


def test_the_classifier_layer_is_the_head_before_its_scale():
    model = small('resnet9')
    variables = model.init(jax.random.PRNGKey(0), (32, 32, 3))
    assert 'bias' not in variables['params']['head']['dense']  # P3's ResNet-9: Linear(bias=False), Mul(0.2)
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 32, 32, 3))
    run = model.apply(variables, x, capture=['head.dense'])
    np.testing.assert_allclose(run.output, 0.2 * run.features['head.dense'], rtol=1e-6)


def test_replacing_a_unit_replaces_its_params_and_statistics_only():
    model = small('resnet18')
    final = model.init(jax.random.PRNGKey(0), (32, 32, 3))
    start = model.init(jax.random.PRNGKey(1), (32, 32, 3))
    unit = {u.name: u for u in model.units('layer')}['layer2.0.shortcut']
    out = model.replace_unit(final, unit, start)
    for collection in ('params', 'batch_stats'):
        for leaf in _leaf_paths(final[collection]):
            inside = leaf[:2] == ('layer2.0', 'shortcut')
            expected = get_subtree(start[collection] if inside else final[collection], leaf)
            np.testing.assert_array_equal(get_subtree(out[collection], leaf), expected)
    assert model.unit_variables(out, unit)['params'][('layer2.0', 'shortcut')]['conv']['kernel'].shape == (1, 1, 4, 8)
