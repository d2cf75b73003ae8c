"""Every shipped config loads, validates, documents itself, and builds its model."""

import glob
import importlib.util
import os

import pytest

from memjax.experiment import check
from memjax.models import build_model

CONFIGS = sorted(glob.glob(os.path.join(os.path.dirname(__file__), '..', 'configs', '*.py')))


def load(path):
    spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_paper_configs_exist():
    names = {os.path.basename(p)[:-3] for p in CONFIGS}
    assert {'default', 'svhn_cnn', 'cifar10_r18', 'cifar10_r34', 'cifar100_r34', 'cifar100_r50',
            'cifar10_r9', 'fashion_mnist_p3', 'cifar10_vgg11_p4', 'fashion_mnist_p4', 'cifar10_r18_p5',
            'fashion_mnist_p5'} <= names


@pytest.mark.parametrize('path', CONFIGS, ids=os.path.basename)
def test_config_validates_and_documents_itself(path):
    module = load(path)
    doc = module.__doc__ or ''
    assert 'python -m memjax.main --config=configs/' in doc and 'Expected time' in doc
    config = module.get_config()
    check(config)  # training keys and every listed analysis's settings, names against the model
    build_model(config.model.name, 10 if config.data.name != 'cifar100' else 100, config.model.width)


@pytest.mark.parametrize('path', CONFIGS, ids=os.path.basename)
def test_every_config_has_a_smoke_variant_of_the_same_analyses(path):
    """`--config=configs/<name>.py:smoke` works for every config: synthetic data, two epochs, the same
    analyses (a config whose get_config takes no variant would refuse it)."""
    module = load(path)
    full, smoke = module.get_config(), module.get_config('smoke')
    check(smoke)
    assert smoke.data.source == 'synthetic' and smoke.train.epochs == 2
    assert tuple(smoke.analyses) == tuple(full.analyses)


def test_p1_cka_is_per_layer_in_the_cifar_resnet_configs():
    """P1's Fig. 1 is per layer; the default job's CNN keeps the default (its layers are its stages)."""
    for name in ('cifar10_r18', 'cifar10_r34', 'cifar100_r34', 'cifar100_r50'):
        path = os.path.join(os.path.dirname(__file__), '..', 'configs', f'{name}.py')
        assert load(path).get_config().analysis.cka.granularity == 'layer', name
    default = load(os.path.join(os.path.dirname(__file__), '..', 'configs', 'default.py')).get_config()
    assert default.analysis.cka.granularity == 'stage'


def test_keys_an_architecture_ignores_do_not_make_a_run_directory_foreign():
    from memjax.config import config_differences, to_dict, training_config
    old, new = to_dict(training_config()), to_dict(training_config())
    old['model']['patch'], new['model']['patch'] = 4, None  # a CNN run written before model.patch lost its default
    assert config_differences(old, new) == []
    for config in (old, new):
        config['model']['name'] = 'vit_small'
    assert config_differences(old, new) == ['model.patch: 4 -> None']  # a ViT reads it: a different run
    new['model']['patch'], new['model']['width'] = 4, 64
    assert config_differences(old, new) == ['model.width: None -> 64']


def test_the_p2_configs_run_their_papers_analyses():
    """P2: stitching in both directions (critical depths included) on all five models; fine-tuning on
    ResNet-18 / CIFAR-10 only; P1's CKA where P1 ran it (the SVHN CNN and ResNet-18 / CIFAR-10)."""
    configs = os.path.join(os.path.dirname(__file__), '..', 'configs')
    expected = {'svhn_cnn': {'convergence', 'noisy_vs_clean', 'stitching'},
                'cifar10_r18': {'convergence', 'noisy_vs_clean', 'stitching', 'finetune'},
                'cifar10_r34': {'stitching'}, 'cifar100_r34': {'stitching'}, 'cifar100_r50': {'stitching'}}
    for name, analyses in expected.items():
        listed = set(load(os.path.join(configs, f'{name}.py')).get_config().analyses)
        assert analyses <= listed, name
        assert ('finetune' in listed) == (name == 'cifar10_r18'), name
        assert bool(listed & {'convergence', 'noisy_vs_clean'}) == (name in ('svhn_cnn', 'cifar10_r18')), name
    svhn = load(os.path.join(configs, 'svhn_cnn.py')).get_config()
    assert 0.675 in svhn.noise.ratios  # P1's ratios


@pytest.mark.parametrize('variant,data,model,analyses', [
    ('', 'cifar10', 'resnet9', ('gradients', 'rewinding', 'retraining', 'neurons', 'example_tied', 'weight_change')),
    ('mnist', 'mnist', 'resnet9', ('gradients', 'rewinding', 'retraining', 'example_tied')),
    ('svhn', 'svhn_cropped', 'resnet9', ('gradients', 'rewinding', 'retraining', 'example_tied')),
    ('resnet50', 'cifar10', 'resnet50', ('gradients', 'rewinding')),
    ('vit', 'cifar10', 'vit_small', ('gradients', 'rewinding')),
    ('svhn,resnet50', 'svhn_cropped', 'resnet50', ('gradients', 'rewinding')),
    ('mnist,smoke', 'mnist', 'cnn', ('gradients', 'rewinding', 'retraining', 'example_tied')),
    ('vit,smoke', 'cifar10', 'cnn', ('gradients', 'rewinding'))])
def test_the_p3_config_variants_load_and_validate(variant, data, model, analyses):
    module = load(os.path.join(os.path.dirname(__file__), '..', 'configs', 'cifar10_r9.py'))
    config = module.get_config(variant)
    check(config)
    assert (config.data.name, config.model.name, tuple(config.analyses)) == (data, model, analyses)
    assert config.noise.mode == 'incorrect' and config.noise.ratios == (0.1,)
    assert config.analysis.gradients.window == ((1, 2) if 'smoke' in variant else (16, 20))  # P3 Fig. 1's epochs
    assert (config.data.source == 'synthetic') == ('smoke' in variant)
    if 'smoke' not in variant:
        assert config.analysis.neurons.parallel is None  # chosen from the device's memory
    name = variant.split(',')[0]
    if name and name != 'smoke':
        assert f'configs/cifar10_r9.py:{name}' in module.__doc__  # its command


def test_the_p3_config_refuses_two_data_sets():
    from memjax.errors import ConfigError
    module = load(os.path.join(os.path.dirname(__file__), '..', 'configs', 'cifar10_r9.py'))
    with pytest.raises(ConfigError, match='more than one data set or architecture'):
        module.get_config('mnist,svhn')
