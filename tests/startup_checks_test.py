"""Every value is checked before work: settings against their declared ranges, against the training keys
and against the data, each failure one line naming the key and the fix."""

import pytest

from helpers import tiny_config
from memjax.errors import ConfigError
from memjax.experiment import check


@pytest.mark.parametrize('key,name', [('gradients', 'train.gradient_accounting=True'),
                                      ('input_gradients', 'train.input_gradients=True')])
def test_a_training_record_the_run_does_not_write_is_refused_with_both_fixes(key, name):
    config = tiny_config(**{'analyses': (key,), f'analysis.{key}.source': 'training'})
    with pytest.raises(ConfigError, match=rf'{name} .*source=checkpoints'):
        check(config)
    config.train.gradient_accounting = config.train.input_gradients = True
    check(config)


def test_every_setting_declares_its_choices_or_range():
    from memjax.analysis.registry import settings_classes
    from memjax.config import GROUPS
    from memjax.schema import field_type
    import dataclasses
    for cls in (*GROUPS, *settings_classes().values()):
        for field in dataclasses.fields(cls):
            declared = field.metadata.get('choices') or field.metadata.get('range') is not None
            assert declared or field_type(cls, field)[0] is bool, f'{cls.path()}.{field.name} declares no range'


@pytest.mark.parametrize('key,value,message', [
    ('analysis.manifolds.kappa', -1.0, r'analysis.manifolds.kappa=-1.0: it must be >= 0'),
    ('analysis.dissimilarity.learning_rate', 0.0, r'analysis.dissimilarity.learning_rate=0.0: it must be > 0'),
    ('analysis.example_tied.variants', (('example_tied', 0.8, 0.5, 0.0),), r'p_gen \+ p_mem = 1.3 > 1'),
    ('analysis.example_tied.grid_p_gen', (0.8,), r'p_gen \+ p_mem = 1.3 > 1'),
    ('analysis.manifolds.classes', (1, 1), r'analysis.manifolds.classes=\(1, 1\) names a class twice'),
    ('analysis.cka.num_examples', 2, r'analysis.cka.num_examples=2: it must be >= 4'),
    ('train.learning_rate', -0.1, r'train.learning_rate=-0.1: it must be > 0'),
    ('train.momentum', 1.0, r'train.momentum=1.0: it must be \[0, 1\)'),
    ('noise.ratios', (0.0, 1.5), r'noise.ratios=\(0.0, 1.5\): each value must be \[0, 1\]'),
    ('data.num_classes', 1, r'data.num_classes=1: it must be >= 2'),
])
def test_a_value_out_of_its_declared_range_is_one_line_before_any_work(key, value, message):
    analyses = {'analysis.manifolds': ('manifolds',), 'analysis.dissimilarity': ('dissimilarity',),
                'analysis.example_tied': ('example_tied',), 'analysis.cka': ('convergence',)}
    config = tiny_config(**{'analyses': analyses.get(key.rsplit('.', 1)[0], ())})
    if key == 'analysis.example_tied.grid_p_gen':
        config.analysis.example_tied.grid_p_mem = (0.5,)
    node, *path = [config, *key.split('.')]
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    with pytest.raises(ConfigError, match=message):
        check(config)


@pytest.mark.parametrize('overrides,message', [
    ({'analyses': ('manifolds',), 'analysis.manifolds.classes': (2, 11)},
     r'analysis.manifolds.classes=\(2, 11\) has 11, not a class of synthetic \(0..3\)'),
    ({'analyses': ('manifolds',), 'analysis.manifolds.examples_per_class': 1000},
     r'analysis.manifolds.examples_per_class=1000 is more than the \d+ clean training examples of class \d in '
     r'replica r=[\d.]+, seed 0; set it to at most \d+'),
    ({'analyses': ('example_tied',), 'analysis.example_tied.noise_ratio': 0.3},
     r"analysis.example_tied.noise_ratio=0.3 is not a noise ratio of this run's noisy replicas \(0.5\)"),
    ({'analyses': ('cka_matrix',), 'analysis.cka_matrix.pairs': (((0.0, 0, -1), (0.7, 0, -1)),)},
     r'names replica r=0.7, seed=0, which this run does not have'),
])
def test_values_the_data_refuses_stop_the_run_before_it_trains(tmp_path, overrides, message):
    from memjax.main import run
    workdir = tmp_path / 'run'
    with pytest.raises(ConfigError, match=message):
        run(tiny_config(**overrides), str(workdir), log=lambda _: None)
    assert not workdir.exists()  # refused right after the data loaded: nothing written, nothing trained
