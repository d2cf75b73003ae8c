"""Every Colab notebook in colab/ runs top to bottom on the CPU with its smoke parameters.

Parameters are injected after the cell tagged `parameters`, as papermill does:
no install (the checkout's memjax), the config's `smoke` variant (synthetic
data, no network), no Drive, a work directory under tmp_path. A cell that
raises fails the test. Select with `pytest -m notebooks`; skip with
`-m 'not notebooks'`.
"""

from __future__ import annotations

import glob
import os

import pytest

nbformat = pytest.importorskip('nbformat')
nbclient = pytest.importorskip('nbclient')
pytest.importorskip('ipykernel')

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, 'colab', '*.ipynb')))


def with_parameters(nb, parameters: dict):
    """The notebook with a cell setting `parameters` right after its `parameters` cell (papermill's way)."""
    index = next(i for i, cell in enumerate(nb.cells) if 'parameters' in cell.metadata.get('tags', []))
    source = '\n'.join(f'{key} = {value!r}' for key, value in parameters.items())
    cell = nbformat.v4.new_code_cell(source, metadata={'tags': ['injected-parameters']})
    nb.cells.insert(index + 1, cell)
    return nb


def test_the_notebooks_of_the_issue_exist():
    names = {os.path.basename(p)[:-6] for p in NOTEBOOKS}
    assert {'quickstart', 'p1_p2_similarity_stitching', 'p3_localization', 'p4_dissection', 'p5_geometry'} <= names


@pytest.mark.notebooks
@pytest.mark.parametrize('path', NOTEBOOKS, ids=os.path.basename)
def test_notebook_runs_top_to_bottom_with_smoke_parameters(path, tmp_path, monkeypatch):
    monkeypatch.setenv('JAX_PLATFORMS', 'cpu')
    monkeypatch.setenv('PYTHONPATH', os.pathsep.join([ROOT] + [p for p in [os.environ.get('PYTHONPATH')] if p]))
    monkeypatch.setenv('MPLBACKEND', 'Agg')
    nb = with_parameters(nbformat.read(path, as_version=4), {
        'INSTALL': False, 'VARIANT': 'smoke', 'DATA_SOURCE': 'synthetic', 'MOUNT_DRIVE': False,
        'WORKDIR': str(tmp_path / 'run'), 'DATA_DIR': str(tmp_path / 'data')})
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name='python3',
                                     resources={'metadata': {'path': ROOT}})
    client.execute()  # raises CellExecutionError naming the failing cell
    outputs = '\n'.join(out.get('text', '') for cell in nb.cells if cell.cell_type == 'code'
                        for out in cell.get('outputs', []) if out.get('output_type') == 'stream')
    assert 'backend: cpu' in outputs and 'memjax run' in outputs and 'memjax: done' in outputs, outputs[-2000:]
    images = [out for cell in nb.cells for out in cell.get('outputs', []) if 'image/png' in out.get('data', {})]
    assert images, 'no figure was displayed'
    assert (tmp_path / 'run' / 'summary.txt').exists()
