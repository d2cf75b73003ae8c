"""A full disk: one `memjax: error:` line and exit 4, nothing half-written that looks complete, and the
rerun resumes once there is space.

The disk is a 2 MB tmpfs (as root, where mounting is allowed), else a 100 kB limit on the size of any
file this process writes (RLIMIT_FSIZE): either way orbax's writes fail midway, on its background
threads for asynchronous saves.
"""

import contextlib
import json
import os
import resource
import signal
import subprocess
import sys

from main_test import ROOT, write_config


@contextlib.contextmanager
def small_disk(path):
    """Yields (preexec_fn for the memjax process, free()): free() gives the disk room again."""
    os.makedirs(path)
    mounted = os.geteuid() == 0 and subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', str(path)],
                                                   capture_output=True).returncode == 0
    limit = {'on': not mounted}

    def preexec():
        if limit['on']:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
            resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))

    def free():
        if mounted:
            subprocess.run(['mount', '-o', 'remount,size=256m', str(path)], check=True)
        limit['on'] = False

    try:
        yield preexec, free
    finally:
        if mounted:
            subprocess.run(['umount', '-l', str(path)], capture_output=True)


def run_cli(config, workdir, preexec, *flags):
    env = dict(os.environ, JAX_PLATFORMS='cpu')
    return subprocess.run([sys.executable, '-m', 'memjax.main', f'--config={config}', f'--workdir={workdir}',
                           '--config.model.width=48', *flags], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600, preexec_fn=preexec)


def assert_one_line_exit_4(result):
    assert result.returncode == 4, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith('memjax: error: file system: could not write checkpoints'), lines
    assert 'no space left on device' in lines[0] or 'file too large' in lines[0], lines
    assert 'rerun the same command to resume' in lines[0]
    assert 'Traceback' not in result.stdout


def test_full_disk_is_one_line_exit_4_with_sync_and_async_saves_and_the_rerun_resumes(tmp_path):
    config = write_config(tmp_path)
    workdir = tmp_path / 'disk' / 'run'
    with small_disk(tmp_path / 'disk') as (preexec, free):
        assert_one_line_exit_4(run_cli(config, workdir, preexec, '--config.checkpoint.async_save=False'))
        assert_one_line_exit_4(run_cli(config, workdir, preexec, '--config.checkpoint.async_save=True'))
        status = json.loads((workdir / 'status.json').read_text()) if (workdir / 'status.json').exists() else {}
        assert status.get('status') != 'complete'
        for kind in ('epochs', 'state'):  # orbax commits a checkpoint by renaming it when whole
            folder = workdir / 'checkpoints' / kind
            names = os.listdir(folder) if folder.exists() else []
            assert all(name.endswith('.orbax-checkpoint-tmp') for name in names), names
        free()
        resumed = run_cli(config, workdir, preexec)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        rows = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
        assert sorted((r['epoch'], r['replica']) for r in rows) == [(e, i) for e in range(4) for i in range(2)]
        assert json.loads((workdir / 'status.json').read_text())['status'] == 'complete'
