"""scripts/device_check.py --smoke: the prepared accelerator check runs end to end on the CPU and writes its JSON."""

import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'scripts'))

import device_check  # noqa: E402


def test_device_check_smoke_writes_every_section(tmp_path):
    out = tmp_path / 'check.json'
    report = device_check.main(['--smoke', f'--out={out}'])
    assert json.loads(out.read_text())['smoke'] is True
    assert report['backend'] == 'cpu' and report['chip'] == 'cpu'
    models = {(r['model'], r['dtype']) for r in report['training']}
    assert ('cnn', 'float32') in models and ('resnet18', 'bfloat16') in models
    for row in report['training']:
        # images/s is batch / measured step time, FLOPs per image from XLA, MFU against the chip's peak
        assert row['images_per_second'] == row['batch'] / row['measured_seconds_per_step']
        assert row['flops_per_image'] > 0 and 0 < row['mfu'] < 1
        assert row['predicted_peak_bytes'] > 0 and row['predicted_seconds_per_step'] > 0
    lifted = {(r['replicas'], r['lifting']) for r in report['liftings']}
    assert {(1, 'vmap'), (2, 'map'), (2, 'loop')} <= lifted
    # the loop lifting's step is R calls of the one-replica program: its FLOPs are R times one replica's
    by = {(r['replicas'], r['lifting']): r for r in report['liftings']}
    assert by[(2, 'loop')]['flops_per_step'] == 2 * by[(1, 'loop')]['flops_per_step']
    assert report['neurons']['fits'] and report['neurons']['program'].startswith('search step (4 examples')
    assert 'skipped' in report['torch'] or report['torch']['cnn']['images_per_second'] > 0
