import numpy as np
import pytest

from memjax.experiment import base_config
from memjax.train.schedules import make_schedule


def schedule(**train):
    c = base_config()
    for k, v in train.items():
        c.train[k] = v
    return make_schedule(c.train, steps_per_epoch=10)


def test_onecycle_rises_linearly_to_the_peak_epoch_then_falls_to_zero():
    f = schedule(schedule='onecycle', learning_rate=0.1, epochs=50, peak_epoch=10.0)
    assert float(f(0)) == 0.0
    assert float(f(50)) == pytest.approx(0.05)
    assert float(f(100)) == pytest.approx(0.1)
    assert float(f(300)) == pytest.approx(0.05)
    assert float(f(500)) == pytest.approx(0.0, abs=1e-9)


def test_step_schedule_multiplies_at_milestones():
    f = schedule(schedule='step', learning_rate=1.0, epochs=30, milestones=(10, 20), gamma=0.1)
    assert [float(f(s)) for s in (0, 99, 100, 199, 200)] == pytest.approx([1.0, 1.0, 0.1, 0.1, 0.01])


def test_cosine_and_constant():
    cosine = schedule(schedule='cosine', learning_rate=0.2, epochs=10)
    assert float(cosine(0)) == pytest.approx(0.2) and float(cosine(50)) == pytest.approx(0.1)
    assert float(cosine(100)) == pytest.approx(0.0, abs=1e-9)
    constant = schedule(schedule='constant', learning_rate=0.3)
    assert np.allclose([float(constant(s)) for s in (0, 1000)], 0.3)
