"""CKA per layer (`analysis.cka.granularity='layer'`) on a tiny ResNet-18: what its numbers mean.

One tiny run (ResNet-18 of width 4 on 8x8x1 images, r = 0 and 0.5, one epoch)
is analysed at both granularities, the layer one with the paper configs' CKA
settings (`paper_settings.paper_cka`: biased linear CKA, full batch, here of
N = 32 test images in blocks of 16); every layer-level number is checked
against a NumPy CKA of features captured directly with `model.apply(capture=...)`.
"""

import os

import numpy as np
import pytest

from helpers import tiny_config
from memjax.analysis.runner import run_analyses
from memjax.analysis.similarity.representations import CkaSettings, block_ends, cka_units
from memjax.data.pipeline import normalize
from memjax.errors import ConfigError
from memjax.experiment import check
from memjax.models import build_model
from memjax.paper_settings import paper_cka
from memjax.run import open_run
from memjax.train.loop import train

quiet = lambda _: None
N = 32
CKA_ANALYSES = ('convergence', 'noisy_vs_clean', 'cka_matrix')
MATRIX = 'r0_s0_e1__r0.5_s0_e1'  # the default pair: final clean (rows) vs final noisy (columns)


def config(**overrides):
    return tiny_config(**{'model.name': 'resnet18', 'train.epochs': 1, 'seeds': (0,), **overrides})


def analyse(workdir, granularity, paper=False, **cka):
    """Runs the three CKA analyses; {'convergence' | 'noisy_vs_clean' | 'matrix': npz contents, 'csv': header}.
    paper: with the paper configs' CKA settings, on N examples in blocks of 16."""
    c = config(**{'analyses': CKA_ANALYSES})
    if paper:
        paper_cka(c)
        c.analysis.cka.forward_batch = 16
    c.analysis.cka.num_examples = N
    c.analysis.cka.granularity = granularity
    for key, value in cka.items():
        c.analysis.cka[key] = value
    run_analyses(c, workdir, log=quiet)
    results = os.path.join(workdir, 'results')
    out = {name: dict(np.load(os.path.join(results, name, 'cka.npz'))) for name in CKA_ANALYSES[:2]}
    out['matrix'] = dict(np.load(os.path.join(results, 'cka_matrix', f'{MATRIX}.npz')))
    with open(os.path.join(results, 'convergence', 'cka.csv')) as f:
        out['csv'] = f.read().splitlines()[:2]
    with open(os.path.join(results, 'cka_matrix', f'{MATRIX}.csv')) as f:
        out['matrix_csv'] = f.read().splitlines()[:2]
    return out


@pytest.fixture(scope='module')
def analysed(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp('cka_layers') / 'run')
    train(config(), workdir, log=quiet)
    layer = analyse(workdir, 'layer', paper=True)
    figure = os.path.getsize(os.path.join(workdir, 'figures', 'convergence_by_stage.png'))
    stage = analyse(workdir, 'stage')
    return open_run(workdir), layer, stage, figure


_FEATURES: dict = {}


def features(run, replica: int, epoch: int, name: str) -> np.ndarray:
    """The output of stage or layer `name`, captured directly: [N, D] float64."""
    key = (run.directory.path, replica, epoch, name)
    if key not in _FEATURES:
        images = normalize(run.dataset.test_images[:N], run.dataset.mean, run.dataset.std)
        out = run.model.apply(run.replica_variables(epoch, replica), images, capture=[name]).features[name]
        _FEATURES[key] = np.asarray(out, np.float64).reshape(N, -1)
    return _FEATURES[key]


def linear_cka(x: np.ndarray, y: np.ndarray, debiased: bool = False) -> float:
    """P1's linear CKA of x [n, D1], y [n, D2] from Grams: HSIC = tr(K H L H) / (n-1)^2; or, debiased,
    the unbiased HSIC of Song et al. 2012."""
    n = len(x)
    k, l = x @ x.T, y @ y.T

    def hsic(a, b):
        if not debiased:
            h = np.eye(n) - 1.0 / n
            return np.trace(a @ h @ b @ h) / (n - 1) ** 2
        a, b = a - np.diag(np.diag(a)), b - np.diag(np.diag(b))
        one = np.ones(n)
        return (np.trace(a @ b) + one @ a @ one * (one @ b @ one) / ((n - 1) * (n - 2))
                - 2.0 / (n - 2) * one @ a @ b @ one) / (n * (n - 3))
    return float(hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l)))


# ResNet-18's 29 CKA units at layer granularity: each block's output follows its block's layers.
LAYER_UNITS = ['stem']
for block in ('layer1.0', 'layer1.1', 'layer2.0', 'layer2.1', 'layer3.0', 'layer3.1', 'layer4.0', 'layer4.1'):
    LAYER_UNITS += [f'{block}.conv_bn1', f'{block}.conv_bn2']
    LAYER_UNITS += [f'{block}.shortcut'] if block.endswith('.0') and block != 'layer1.0' else []
    LAYER_UNITS += [block]
LAYER_UNITS += ['head.dense']


def test_layer_cka_is_p1s_full_batch_cka_of_the_captured_layer_and_block_output(analysed):
    run, layer, _, _ = analysed
    names = list(layer['convergence']['stages'])
    assert names == LAYER_UNITS and len(names) == 29
    assert [n for n in names if n not in run.model.layer_names] == list(run.model.stage_names[1:-1])
    assert layer['convergence']['cka'].shape == (2, 29, 2)  # replicas, units, epochs 0..1
    assert str(layer['convergence']['granularity']) == 'layer'
    assert str(layer['convergence']['estimator']) == 'linear' and int(layer['convergence']['minibatch_size']) == 0
    epochs, final = list(layer['noisy_vs_clean']['epochs']), run.final_epoch()
    clean = run.replica_index(0.0, 0)
    for rep in run.replicas:
        # Inside blocks, and the block outputs after the skip addition (captured as the stage's output).
        for name in ('layer1.0.conv_bn1', 'layer2.0.conv_bn2', 'layer3.0.shortcut', 'layer1.0', 'layer3.1'):
            l = names.index(name)
            for t, epoch in enumerate(epochs):
                x = features(run, rep.index, epoch, name)
                for analysis, other in (('noisy_vs_clean', clean), ('convergence', rep.index)):
                    y = features(run, other, final, name)
                    assert layer[analysis]['cka'][rep.index, l, t] == pytest.approx(linear_cka(x, y), abs=2e-4)
                    assert layer[analysis]['cka_debiased'][rep.index, l, t] == pytest.approx(
                        linear_cka(x, y, debiased=True), abs=5e-4)
    # The heatmap pairs a unit of the clean model (row) with another unit of the noisy one (column).
    noisy = run.replica_index(0.5, 0)
    assert layer['matrix']['cka'].shape == (29, 29)
    for a, b in (('layer1.0.conv_bn1', 'layer3.1.conv_bn2'), ('layer2.0', 'layer2.1')):
        i, j = names.index(a), names.index(b)
        assert layer['matrix']['cka'][i, j] == pytest.approx(
            linear_cka(features(run, clean, final, a), features(run, noisy, final, b)), abs=2e-4)


def test_a_layer_that_is_a_stage_has_the_stage_rows(analysed):
    _, layer, stage, _ = analysed
    assert list(stage['convergence']['stages']) == list(build_model('resnet18', 4, 4).stage_names)
    for granular in (layer, stage):
        assert granular['convergence']['cka'].shape[1] == len(granular['convergence']['stages'])
    for name in ('convergence', 'noisy_vs_clean'):
        by_layer, by_stage = list(layer[name]['stages']), list(stage[name]['stages'])
        for unit in ('stem', ('head.dense', 'head')):  # the head's output is its linear layer's
            a, b = (unit, unit) if isinstance(unit, str) else unit
            np.testing.assert_allclose(layer[name]['cka'][:, by_layer.index(a)],
                                       stage[name]['cka'][:, by_stage.index(b)], atol=1e-6)
        # A layer inside a block is not its block: conv_bn2 is the residual branch before the skip is added;
        # the block output unit is the stage.
        inner, block = layer[name]['cka'][:, by_layer.index('layer1.0.conv_bn2')], stage[name]['cka'][:, 1]
        assert by_stage[1] == 'layer1.0' and np.max(np.abs(inner - block)) > 1e-3
        for unit in ('layer1.0', 'layer2.0', 'layer4.1'):
            np.testing.assert_allclose(layer[name]['cka'][:, by_layer.index(unit)],
                                       stage[name]['cka'][:, by_stage.index(unit)], atol=1e-5)
    l, s = list(layer['matrix']['stages']).index('stem'), list(stage['matrix']['stages']).index('stem')
    assert layer['matrix']['cka'][l, l] == pytest.approx(stage['matrix']['cka'][s, s], abs=1e-6)


def test_tables_say_which_granularity(analysed):
    _, layer, stage, figure = analysed
    assert layer['csv'][0] == 'replica,noise_ratio,seed,epoch,granularity,stage,cka,cka_debiased'
    assert layer['csv'][1].split(',')[4:6] == ['layer', 'stem']
    assert stage['csv'][1].split(',')[4:6] == ['stage', 'stem']
    assert layer['matrix_csv'][0] == 'granularity,stage_a,stage_b,cka,cka_debiased'
    assert layer['matrix_csv'][1].startswith('layer,stem,stem,')
    assert str(layer['matrix']['granularity']) == 'layer' and str(stage['matrix']['granularity']) == 'stage'
    assert figure > 10_000  # figures/convergence_by_stage.png of the layer run


def test_group_boundaries_fall_between_residual_groups():
    model = build_model('resnet18', 10, 4)
    layers = model.layer_names
    ends = block_ends(layers)
    # P1 Fig. 1: four lines, after the last layer of each residual group (none after the stem).
    assert ends == [4, 9, 14, 19]
    assert [(layers[e], layers[e + 1]) for e in ends] == [
        ('layer1.1.conv_bn2', 'layer2.0.conv_bn1'),
        ('layer2.1.conv_bn2', 'layer3.0.conv_bn1'), ('layer3.1.conv_bn2', 'layer4.0.conv_bn1'),
        ('layer4.1.conv_bn2', 'head.dense')]
    # CKA's layer units: the lines follow each group's last block output.
    ends = block_ends(tuple(LAYER_UNITS))
    assert [(LAYER_UNITS[e], LAYER_UNITS[e + 1]) for e in ends] == [
        ('layer1.1', 'layer2.0.conv_bn1'), ('layer2.1', 'layer3.0.conv_bn1'), ('layer3.1', 'layer4.0.conv_bn1'),
        ('layer4.1', 'head.dense')]
    assert block_ends(model.stage_names) == [2, 4, 6, 8]
    assert block_ends(build_model('cnn', 10, 4).layer_names) == [2]  # conv3 | fc1


def test_block_outputs_are_cka_units_only():
    """At layer granularity CKA adds each residual block's output after its last layer; the other analyses'
    layer units (gradients, rewinding, retraining, neurons) are unchanged: a block output has no parameters."""
    settings = CkaSettings(granularity='layer')
    resnet9 = build_model('resnet9', 10, 4)
    names = [u.name for u in cka_units(resnet9, settings)]
    assert names == ['layer1', 'layer2', 'layer3.conv_bn1', 'layer3.conv_bn2', 'layer3', 'layer4',
                     'layer5.conv_bn1', 'layer5.conv_bn2', 'layer5', 'layer6', 'head.dense']
    assert [names[e] for e in block_ends(tuple(names))] == ['layer2', 'layer3', 'layer4', 'layer5', 'layer6']
    resnet18 = build_model('resnet18', 10, 4)
    assert [u.name for u in cka_units(resnet18, settings)] == LAYER_UNITS
    assert [u.name for u in resnet18.units('layer')] == list(resnet18.layer_names)  # 21, no block outputs
    block = cka_units(resnet18, CkaSettings(granularity='layer', stages=('layer2.0',)))[0]
    assert block.output == 'layer2.0' and block.layers == ('layer2.0.conv_bn1', 'layer2.0.conv_bn2',
                                                            'layer2.0.shortcut')
    cnn = build_model('cnn', 10, 4)
    assert [u.name for u in cka_units(cnn, settings)] == list(cnn.layer_names)  # one layer per stage: none added


def test_unit_names_are_checked_at_start_up_against_the_granularity():
    def start(granularity, stages):
        check(config(**{'analyses': ('convergence',), 'analysis.cka.granularity': granularity,
                        'analysis.cka.stages': stages}))
    with pytest.raises(ConfigError, match=r"analysis.cka.stages names layer 'head', which resnet18 lacks "
                                          r"at analysis.cka.granularity='layer' \('head' is a stage: set "
                                          r"analysis.cka.granularity='stage'\); its layers: stem, layer1.0.conv_bn1,"):
        start('layer', ('stem', 'head'))
    with pytest.raises(ConfigError, match=r"names stage 'layer1.0.conv_bn1', which resnet18 lacks .*is a layer"):
        start('stage', ('layer1.0.conv_bn1',))
    with pytest.raises(ConfigError, match="names layer 'layer9.conv', which resnet18 lacks at analysis.cka."
                                          "granularity='layer'; its layers: stem, "):
        start('layer', ('layer9.conv',))
    with pytest.raises(ConfigError, match="analysis.cka.granularity='p3_groups' is not one of stage, layer"):
        start('p3_groups', ())
    start('layer', ('layer2.0.shortcut', 'stem', 'layer1.0'))


def test_selected_layers_in_minibatches(analysed):
    run, _, _, _ = analysed
    result = analyse(run.directory.path, 'layer', stages=('layer2.0.shortcut', 'stem'), estimator='debiased',
                     minibatch_size=16)
    assert list(result['convergence']['stages']) == ['stem', 'layer2.0.shortcut']  # forward order
    np.testing.assert_allclose(result['convergence']['cka'][:, :, -1], 1.0, atol=1e-4)
    assert result['matrix']['cka'].shape == (2, 2)
