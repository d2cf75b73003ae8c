"""`python -m memjax.plan`: the paper configs' programs at their real sizes, the fit verdict and its fix, the roofline.

Compiling every program of every paper config takes about 5 minutes on 2 CPU
cores (training alone ~300 s), more than a test may; so every config's jobs are
BUILT at real shapes (abstract evaluation, no compilation), and compiled at real
size: the full plan of configs/cifar10_r18.py (training, CKA, stitching), the
P3 neuron search of configs/cifar10_r9.py, P4's ascent and input gradients
(configs/cifar10_vgg11_p4.py) and P5's MFTMA (configs/cifar10_r18_p5.py): every
analysis builder once.
"""

import glob
import importlib
import os

import jax
import jax.numpy as jnp
import pytest

from helpers import apply_overrides

from memjax.plan import __main__ as cli
from memjax.plan.accelerators import ACCELERATORS, accelerator, planned_lifting
from memjax.plan.analyses import analysis_jobs
from memjax.plan.programs import Job, cost, measure, memory, roofline
from memjax.plan.report import make_plan
from memjax.plan.shapes import run_shape
from memjax.plan.training import training_jobs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, 'configs', '*.py')))


def _config(name, **overrides):
    return apply_overrides(importlib.import_module(f'configs.{name}').get_config(), overrides)


def _run(capsys, *args):
    code = cli.entry(['plan', *args])
    out = capsys.readouterr()
    return code, out.out + out.err


@pytest.mark.parametrize('name', CONFIGS)
def test_every_paper_config_builds_its_programs_at_real_shapes(name):
    """Every config's training step, evaluation and analysis programs are built from its real shapes."""
    shape = run_shape(_config(name))
    chip = accelerator('h100')
    lifting, _ = planned_lifting(shape.settings.train.strategy, shape.size, chip)
    jobs = training_jobs(shape, lifting) + analysis_jobs(shape, chip)
    assert [j.section for j in jobs][:2] == ['training', 'training']
    assert {j.section for j in jobs} == {'training', *shape.listed}
    assert jobs[0].calls == shape.steps_per_epoch * shape.settings.train.epochs  # vmap: one call per step
    if shape.settings.data.num_train is None:  # the whole training split: train + validation
        assert shape.num_train + shape.num_val == {'cifar10': 50_000, 'cifar100': 50_000, 'svhn_cropped': 73_257,
                                                   'fashion_mnist': 60_000, 'mnist': 60_000}[shape.settings.data.name]


def test_cifar10_r18_on_h100_fits_and_holds_three_models_grams(capsys, tmp_path):
    code, out = _run(capsys, f'--config={ROOT}/configs/cifar10_r18.py', '--accelerator=h100',
                     f'--json={tmp_path}/plan.json')
    assert code == 0, out
    assert "XLA:CPU's compiler" in out and 'estimates' in out  # compiled here: said plainly
    import json
    plan = json.load(open(f'{tmp_path}/plan.json'))
    rows = {r['section']: r for r in plan['rows']}
    # P1's layer CKA: 29 units x 10,000^2 float32 Grams, three models held (convergence + noisy_vs_clean)
    assert rows['convergence']['resident'] == 3 * 29 * 10_000 ** 2 * 4
    assert rows['noisy_vs_clean']['calls'] == 0  # formed once, in convergence's pass
    train = plan['rows'][0]
    # 9 replicas x 128 images of ResNet-18 forward and backward: ~3x the forward's 0.56 GMAC per image
    per_image = train['flops'] / (9 * 128)
    assert 2.5e9 < per_image < 4.5e9, per_image
    assert train['calls'] == 351 * 200 and plan['lifting'] == 'vmap'


def test_p3_neuron_search_is_flagged_on_v5e_with_a_fix_that_fits(capsys):
    code, out = _run(capsys, f'--config={ROOT}/configs/cifar10_r9.py', '--accelerator=v5e', '--only=neurons')
    assert code == 1, out
    assert 'does not fit 16 GB' in out and '--config.analysis.neurons.reference_batch=' in out
    fix = int(out.split('--config.analysis.neurons.reference_batch=')[1].split()[0])
    assert 32 <= fix < 512
    shape = run_shape(_config('cifar10_r9', **{'analysis.neurons.reference_batch': fix}))
    row = measure(analysis_jobs(shape, ACCELERATORS['v5e'], ('neurons',))[0], ACCELERATORS['v5e'])
    assert row.fits and not row.fix  # the named fix does fit


def test_a_too_large_parallel_is_refused_naming_the_parallel_that_fits():
    chip = ACCELERATORS['h100']
    plan = make_plan(_config('cifar10_r9', **{'analysis.neurons.parallel': 64}), chip, only=('neurons',))
    (row,) = plan.misfits
    fixed = int(row.fix.split('--config.analysis.neurons.parallel=')[1].split()[0])
    assert 1 <= fixed < 64 and 'DOES NOT FIT' in plan.text()
    shape = run_shape(_config('cifar10_r9', **{'analysis.neurons.parallel': fixed}))
    assert measure(analysis_jobs(shape, chip, ('neurons',))[0], chip).fits


def test_p4_and_p5_analysis_programs_compile_at_real_size():
    chip = ACCELERATORS['h100']
    p4 = make_plan(_config('cifar10_vgg11_p4'), chip, only=('dissimilarity', 'input_gradients'))
    rows = {r.section: r for r in p4.rows}
    ascent, gradients = rows['dissimilarity'], rows['input_gradients']
    assert ascent.iterations == 1000 and ascent.flops > 0 and ascent.fits
    # the run records G during training (train.input_gradients): the analysis compiles nothing
    assert gradients.calls == 0 and 'training record' in gradients.name
    p5 = make_plan(_config('cifar10_r18_p5'), chip, only=('manifolds',))
    (mftma,) = p5.rows
    assert mftma.iterations == 20000 and mftma.flops > 0


def test_roofline_and_memory_match_a_hand_computation():
    m, k, n = 256, 512, 1024
    specs = (jax.ShapeDtypeStruct((m, k), jnp.float32), jax.ShapeDtypeStruct((k, n), jnp.float32))
    compiled = jax.jit(jnp.matmul).lower(*specs).compile()
    flops, accessed = cost(compiled)
    assert flops == 2 * m * k * n
    assert accessed == 4 * (m * k + k * n + m * n)
    assert memory(compiled) >= 4 * (m * k + k * n + m * n)
    h100 = ACCELERATORS['h100']
    # 268 MFLOP at 494.7 TFLOP/s (TF32) = 0.54 us; 3.67 MB at 3.35 TB/s = 1.10 us: memory-bound
    assert roofline(flops, accessed, h100, 'float32') == pytest.approx(4 * (m * k + k * n + m * n) / 3.35e12)
    assert roofline(1e15, 0, h100, 'bfloat16') == pytest.approx(1e15 / 989e12)
    row = measure(Job('t', 'matmul', lambda: compiled, calls=10, count='', iterations=3), h100)
    assert row.seconds == pytest.approx(10 * 3 * 4 * (m * k + k * n + m * n) / 3.35e12)
    v5e = ACCELERATORS['v5e']
    tiny = Job('t', 'matmul', lambda: compiled, calls=1, count='', resident=v5e.limit)
    assert not measure(tiny, v5e).fits  # resident memory counts against the chip


def test_an_unknown_accelerator_is_one_error_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.entry(['plan', f'--config={ROOT}/configs/default.py', '--accelerator=b200'])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith('memjax: error:') and 'h100' in err and err.count('\n') == 1
