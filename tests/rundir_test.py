"""A run directory that never lies: divergence, locking, damaged checkpoints, exactly-once metrics,
whole metadata, atomic analysis results, one-line errors."""

import glob
import json
import os
import shutil

import pytest

from helpers import tiny_config
from main_test import cli, write_config
from memjax.analysis.runner import run_analyses
from memjax.checkpoint import Checkpoints
from memjax.errors import ConfigError, RunDirectoryError
from memjax.experiment import check
from memjax.report import p3_plots
from memjax.rundir import RunDirectory
from memjax.train.faults import KILL_AFTER_EPOCH_ENV, Poison
from memjax.train.loop import train
from train_test import assert_trees, final_variables, quiet, replica_tree


def strict_rows(workdir):
    def reject(token):
        raise ValueError(f'non-strict JSON token {token}')
    with open(os.path.join(workdir, 'metrics.jsonl')) as f:
        return [json.loads(line, parse_constant=reject) for line in f]


def keys(rows):
    return sorted((r['epoch'], r['replica']) for r in rows)


def test_a_diverged_replica_stops_alone_and_analyses_refuse(tmp_path, monkeypatch):
    config = tiny_config(**{'noise.ratios': (0.0, 0.25, 0.5), 'train.epochs': 3})
    train(config, str(tmp_path / 'straight'), log=quiet)
    lines = []
    train(config, str(tmp_path / 'poisoned'), log=lines.append, faults=[Poison(1, 2)])
    status = RunDirectory(str(tmp_path / 'poisoned')).status()
    assert status['diverged'] == ['r=0.25,seed=0'] and status['diverged_epoch'] == [-1, 2, -1]
    assert any('r=0.25,seed=0 diverged at epoch 2' in line for line in lines)
    rows = strict_rows(str(tmp_path / 'poisoned'))  # strict JSON: NaN became null
    assert [r['diverged'] for r in rows if r['epoch'] == 3] == [False, True, False]
    assert keys(rows) == keys(strict_rows(str(tmp_path / 'straight')))
    straight, poisoned = final_variables(str(tmp_path / 'straight')), final_variables(str(tmp_path / 'poisoned'))
    for i in (0, 2):  # the others equal an undisturbed run
        assert_trees(replica_tree(straight, i), replica_tree(poisoned, i))
    config.analyses = ('rewinding',)
    with pytest.raises(RunDirectoryError, match='r=0.25,seed=0 diverged'):
        run_analyses(config, str(tmp_path / 'poisoned'), log=quiet)


def test_a_second_process_on_a_locked_workdir_exits_2_at_once(tmp_path):
    workdir = tmp_path / 'run'
    with RunDirectory(str(workdir)).locked():
        result = cli(write_config(tmp_path), workdir)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f'memjax: error: workdir {workdir} is in use by another memjax process (pid {os.getpid()}); wait for it '
        'to finish or pass another --workdir']
    assert os.listdir(workdir) == ['.lock']  # nothing else written


def test_a_damaged_state_falls_back_to_the_one_before(tmp_path):
    config_path = write_config(tmp_path, **{'train.epochs': 4})
    killed = cli(config_path, tmp_path / 'run', env={KILL_AFTER_EPOCH_ENV: '3'})
    assert killed.returncode == -9
    state = tmp_path / 'run' / 'checkpoints' / 'state' / '3'
    largest = max((p for p in glob.glob(f'{state}/**', recursive=True) if os.path.isfile(p)), key=os.path.getsize)
    with open(largest, 'r+b') as f:
        f.truncate(os.path.getsize(largest) // 2)
    lines = []
    train(tiny_config(**{'train.epochs': 4}), str(tmp_path / 'run'), log=lines.append)
    assert any('state of epoch 3 does not restore' in line for line in lines), lines
    assert any('resuming' in line and 'after epoch 2' in line for line in lines)
    assert os.path.isdir(tmp_path / 'run' / 'checkpoints' / 'damaged' / 'state-3')
    train(tiny_config(**{'train.epochs': 4}), str(tmp_path / 'straight'), log=quiet)
    assert keys(strict_rows(str(tmp_path / 'run'))) == keys(strict_rows(str(tmp_path / 'straight')))
    assert_trees(final_variables(str(tmp_path / 'run')), final_variables(str(tmp_path / 'straight')))


def test_removed_states_are_never_retrained_over_silently(tmp_path):
    config_path = write_config(tmp_path)
    assert cli(config_path, tmp_path / 'run', env={KILL_AFTER_EPOCH_ENV: '2'}).returncode == -9
    shutil.rmtree(tmp_path / 'run' / 'checkpoints' / 'state')
    with pytest.raises(RunDirectoryError, match='metrics up to epoch 2 but no resumable state'):
        train(tiny_config(), str(tmp_path / 'run'), log=quiet)


def test_a_missing_or_damaged_final_epoch_is_one_error_before_analyses(tmp_path):
    workdir = str(tmp_path / 'run')
    config = tiny_config(**{'analyses': ('rewinding',)})
    train(config, workdir, log=quiet)
    final = os.path.join(workdir, 'checkpoints', 'epochs', '3')
    shutil.move(final, str(tmp_path / 'aside'))
    with pytest.raises(RunDirectoryError, match='checkpoint of epoch 3 is missing'):
        run_analyses(config, workdir, log=quiet)
    shutil.move(str(tmp_path / 'aside'), final)
    metadata = glob.glob(os.path.join(final, '**', '_METADATA'), recursive=True)[0]
    open(metadata, 'w').close()
    with pytest.raises(RunDirectoryError, match='checkpoint of epoch 3 .* is damaged'):
        run_analyses(config, workdir, log=quiet)


def test_epoch_0_metrics_are_written_once_when_the_first_state_never_landed(tmp_path, monkeypatch):
    original = Checkpoints.save_state

    def lost_first_state(self, epoch, state, progress):
        if epoch == 0:
            return
        original(self, epoch, state, progress)

    def killed(self, **status):
        raise KeyboardInterrupt
    monkeypatch.setattr(Checkpoints, 'save_state', lost_first_state)
    monkeypatch.setattr(RunDirectory, 'set_status', killed)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(), str(tmp_path / 'run'), log=quiet)
    assert keys(strict_rows(str(tmp_path / 'run'))) == [(0, 0), (0, 1)]
    monkeypatch.undo()
    train(tiny_config(), str(tmp_path / 'run'), log=quiet)
    train(tiny_config(), str(tmp_path / 'straight'), log=quiet)
    assert strict_rows(str(tmp_path / 'run')) == strict_rows(str(tmp_path / 'straight'))


def test_metadata_cut_off_midway_is_repaired_by_the_rerun(tmp_path, monkeypatch):
    def crash(self, arrays, data_summary, replicas):
        self.save_noise(**arrays)
        raise KeyboardInterrupt  # killed before data.json / replicas.json / the marker
    monkeypatch.setattr(RunDirectory, 'save_metadata', crash)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(), str(tmp_path / 'run'), log=quiet)
    monkeypatch.undo()
    config = tiny_config(**{'analyses': ('rewinding',)})
    with pytest.raises(RunDirectoryError, match='metadata of .* is incomplete'):
        run_analyses(config, str(tmp_path / 'run'), log=quiet)
    train(config, str(tmp_path / 'run'), log=quiet)
    run_analyses(config, str(tmp_path / 'run'), log=quiet)
    assert os.path.exists(tmp_path / 'run' / 'results' / 'rewinding' / 'complete.json')


def test_an_analysis_killed_midway_leaves_no_finished_looking_results(tmp_path, monkeypatch):
    workdir = str(tmp_path / 'run')
    config = tiny_config(**{'analyses': ('rewinding',)})
    train(config, workdir, log=quiet)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(p3_plots, 'rewinding_last_k', killed)
    with pytest.raises(KeyboardInterrupt):
        run_analyses(config, workdir, log=quiet)
    assert not os.path.exists(os.path.join(workdir, 'results', 'rewinding'))
    assert not glob.glob(os.path.join(workdir, 'figures', 'rewinding*'))
    monkeypatch.undo()
    run_analyses(config, workdir, log=quiet)
    assert os.path.exists(os.path.join(workdir, 'results', 'rewinding', 'complete.json'))
    assert os.path.exists(os.path.join(workdir, 'figures', 'rewinding_last_k.png'))
    assert not os.path.exists(os.path.join(workdir, 'results', '.partial'))


def test_no_validation_split_is_refused_for_analyses_that_train_on_it():
    with pytest.raises(ConfigError, match='data.val_size=0 leaves no validation split, which stitching'):
        check(tiny_config(**{'data.val_size': 0, 'analyses': ('stitching',)}))
    check(tiny_config(**{'data.val_size': 0, 'analyses': ('rewinding',)}))


@pytest.mark.parametrize('args,message', [
    (['--config.analysis.stitching.epochz=3'], 'Did you mean "epochs"'),
    (['--config.analysis.example_tied.p_gen=0.8'],  # a key with no near name: the group's keys are listed
     "--config.analysis.example_tied.p_gen names no key: analysis.example_tied has no 'p_gen' (the keys of "
     'analysis.example_tied: draw, epochs, grid_p_gen'),
    (['--config.train.epochs=abc'], "invalid literal for int() with base 10: 'abc'"),
])
def test_command_line_mistakes_are_one_line(tmp_path, args, message):
    result = cli(write_config(tmp_path), tmp_path / 'run', *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('memjax: error: ') and message in lines[0], result.stderr
    assert not os.path.exists(tmp_path / 'run')


def test_a_missing_config_file_and_a_file_as_workdir_are_one_line(tmp_path):
    result = cli(str(tmp_path / 'nope.py'), tmp_path / 'run')
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and 'nope.py' in lines[0], result.stderr
    (tmp_path / 'afile').write_text('x')
    result = cli(write_config(tmp_path), tmp_path / 'afile')
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and 'is a file, not a directory' in lines[0], result.stderr


def test_a_rerun_skips_finished_analyses_redoes_changed_ones_and_rerun_forces(tmp_path):
    workdir = str(tmp_path / 'run')
    config = tiny_config(**{'analyses': ('rewinding', 'cka_matrix'), 'analysis.cka.num_examples': 16,
                            'analysis.cka.forward_batch': 16})
    train(config, workdir, log=quiet)
    run_analyses(config, workdir, log=quiet)
    record = os.path.join(workdir, 'results', 'rewinding', 'complete.json')
    stored = json.load(open(record))
    assert stored['settings']['rewinding']['last_k'] is True and stored['epochs'] == [0, 1, 2, 3]
    assert set(stored['settings']) == {'rewinding'}
    assert set(json.load(open(os.path.join(workdir, 'results', 'cka_matrix', 'complete.json')))['settings']) \
        == {'cka_matrix', 'cka'}  # it reads analysis.cka too
    messages = []
    run_analyses(config, workdir, log=messages.append)
    assert messages == ['skipped (done with these settings; --rerun=NAME or --rerun=all redoes): rewinding, '
                        'cka_matrix']
    assert json.load(open(record)) == stored  # not rewritten
    changed = tiny_config(**{'analyses': ('rewinding', 'cka_matrix'), 'analysis.cka.num_examples': 16,
                             'analysis.cka.forward_batch': 16, 'analysis.rewinding.last_k': False})
    messages = []
    run_analyses(changed, workdir, log=messages.append)
    assert any('rewinding: redoing (settings changed: analysis.rewinding.last_k True -> False)' in m
               for m in messages), messages
    assert messages[-1].endswith(': cka_matrix')
    assert json.load(open(record))['settings']['rewinding']['last_k'] is False
    messages = []
    run_analyses(changed, workdir, log=messages.append, rerun=('cka_matrix',))
    assert any('redoing (forced by --rerun)' in m for m in messages) and messages[-1].endswith(': rewinding')
    with pytest.raises(ConfigError, match='--rerun=stitching names an analysis that config.analyses does not list'):
        run_analyses(changed, workdir, log=quiet, rerun=('stitching',))


def test_only_the_writing_process_rechecks_a_directory_it_may_be_writing(tmp_path, monkeypatch):
    """In a job of several processes, process 0 creates the run directory while the others pass
    `create`; a non-writing process must not take process 0's half-written files (an atomic write's
    temporary file before config.json lands) for a foreign directory."""
    run = RunDirectory(str(tmp_path / 'run'))
    os.makedirs(run.path)
    with open(run.file('.config.json.tmp'), 'w') as f:  # process 0 mid-way through writing config.json
        f.write('{')
    with pytest.raises(RunDirectoryError, match='not empty and holds no memjax run'):
        run.create({'seeds': [0]})  # the writer (one process) still refuses such a directory
    monkeypatch.setattr('memjax.rundir.writes', lambda: False)
    run.create({'seeds': [0]})  # another process of the job: no check, nothing written
    assert os.listdir(run.path) == ['.config.json.tmp']
