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
