"""Several processes (jax.distributed over local CPU processes, gloo collectives): a job of 2 processes
with 2 devices each trains and analyses replica by replica as 1 process with 4 devices does; a killed
process stops the other with one line and the rerun resumes; bad input on one process stops both."""

import csv
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from helpers import xla_flags
from main_test import ROOT, write_config
from memjax.run import open_run
from memjax.train.faults import KILL_AFTER_EPOCH_ENV
from train_test import assert_trees, final_variables

WAIT = 300  # seconds: every wait of these tests is bounded
OVERRIDES = {'train.epochs': 2, 'noise.ratios': (0.0, 0.5), 'seeds': (0, 1), 'train.strategy': 'shard',
             'analyses': ('rewinding',), 'analysis.rewinding.num_train': 32, 'analysis.rewinding.num_test': 16,
             'analysis.rewinding.last_k': False}


def free_port() -> int:
    """A port no other test worker holds (the kernel picks a free one)."""
    with socket.socket() as s:
        s.bind(('localhost', 0))
        return s.getsockname()[1]


def launch(config, workdir, processes: int, devices: int, extra=None, env=None) -> list:
    """Runs `python -m memjax.main` as `processes` processes of one job (the README's local command);
    extra/env: per process id, more flags / environment. -> [(returncode, stdout, stderr)] by process."""
    port = free_port()
    children = []
    for i in range(processes):
        flags = [f'--coordinator_address=localhost:{port}', f'--num_processes={processes}', f'--process_id={i}',
                 '--process_timeout=60', '--heartbeat_timeout=5'] if processes > 1 else []
        environment = dict(os.environ, JAX_PLATFORMS='cpu',
                           XLA_FLAGS=xla_flags(devices), **(env or {}).get(i, {}))
        children.append(subprocess.Popen(
            [sys.executable, '-m', 'memjax.main', f'--config={config}', f'--workdir={workdir}', *flags,
             *(extra or {}).get(i, [])], cwd=ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True))
    deadline, results = time.monotonic() + WAIT, []
    for child in children:
        try:
            out, err = child.communicate(timeout=max(1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for other in children:
                other.kill()
            raise AssertionError(f'a process of the job hung past {WAIT} s')
        results.append((child.returncode, out, err))
    return results


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith('memjax: error:')]


def rewinding_rows(workdir) -> list[dict]:
    with open(os.path.join(workdir, 'results', 'rewinding', 'rewinding.csv')) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope='module')
def one_process(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('one')
    [(code, _, err)] = launch(write_config(tmp, **OVERRIDES), tmp / 'run', processes=1, devices=4)
    assert code == 0, err
    return tmp / 'run'


def test_two_processes_train_and_analyse_as_one_process(tmp_path, one_process):
    results = launch(write_config(tmp_path, **OVERRIDES), tmp_path / 'run', processes=2, devices=2)
    for code, out, err in results:
        assert code == 0, err
        assert 'strategy shard' in out
    # every replica equals the 1-process run's (same program per device: bit for bit)
    assert_trees(final_variables(str(tmp_path / 'run')), final_variables(str(one_process)))
    run, single = open_run(str(tmp_path / 'run')).directory, open_run(str(one_process)).directory
    strip = lambda rows: [{k: v for k, v in r.items() if 'second' not in k} for r in rows]
    assert strip(run.read_metrics()) == strip(single.read_metrics())
    # the per-replica analysis, its replicas over both processes, equals the 1-process one
    rows, expected = rewinding_rows(tmp_path / 'run'), rewinding_rows(one_process)
    assert len(rows) == len(expected) > 4 and rows == expected
    assert sorted({r['replica'] for r in rows}) == ['0', '1', '2', '3']
    # process 0 alone wrote the run directory: no private scratch of the other left behind
    assert not os.path.exists(tmp_path / 'run' / 'results' / '.partial')


def test_killed_process_stops_the_other_in_one_line_and_both_resume(tmp_path, one_process):
    config, workdir = write_config(tmp_path, **OVERRIDES), tmp_path / 'run'
    started = time.monotonic()
    (code0, _, err0), (code1, _, _) = launch(config, workdir, 2, 2, env={1: {KILL_AFTER_EPOCH_ENV: '1'}})
    assert code1 == -signal.SIGKILL
    assert code0 != 0 and len(error_lines(err0)) == 1, err0
    assert 'process' in error_lines(err0)[0] and 'Traceback' not in err0, err0
    assert time.monotonic() - started < WAIT
    assert open_run(str(workdir)).directory.status()['epoch'] != 'complete'
    resumed = launch(config, workdir, 2, 2)
    for code, out, err in resumed:
        assert code == 0, err
    assert 'resuming' in resumed[0][1]
    assert_trees(final_variables(str(workdir)), final_variables(str(one_process)))
    assert rewinding_rows(workdir) == rewinding_rows(one_process)


def test_bad_input_on_one_process_stops_both_with_one_line(tmp_path):
    config, workdir = write_config(tmp_path, **OVERRIDES), tmp_path / 'run'
    results = launch(config, workdir, 2, 2, extra={1: ['--config.model.name=resnet7']})
    (code0, _, err0), (code1, _, err1) = results
    assert code0 == code1 == 2, (err0, err1)
    [line0], [line1] = error_lines(err0), error_lines(err1)
    assert "model.name='resnet7' is not one of" in line1
    assert line0.startswith('memjax: error: process 1 failed:') and "model.name='resnet7'" in line0
    assert 'Traceback' not in err0 + err1
    assert not workdir.exists()


def test_replicas_that_do_not_split_over_the_processes_are_refused_on_both(tmp_path):
    config = write_config(tmp_path, **dict(OVERRIDES, **{'seeds': (0,)}))  # 2 replicas, 4 devices
    for code, _, err in launch(config, tmp_path / 'run', 2, 2):
        assert code == 2 and len(error_lines(err)) == 1, err
        assert 'do not split over the 4 devices of 2 processes' in err
