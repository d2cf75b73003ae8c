"""The package's shape: imports flow one way, and every analysis key is defined once and documented."""

from __future__ import annotations

import ast
import dataclasses
import pathlib
import re

from memjax.analysis import registry
from memjax.experiment import base_config

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / 'memjax'

# Bottom to top: a module may import from its own layer and the layers below it.
LAYERS = (
    ('errors',),
    ('config', 'schema'),
    ('data',),
    ('models',),
    ('engine',),                    # lifting over replicas, the model runner, the fit loop
    ('rundir', 'checkpoint'),       # the run directory's files, which training writes
    ('train',),
    ('run',),                       # a trained run opened for analysis
    ('report',),                    # tables and figures (drawn by the analyses)
    ('analysis',),
    ('experiment', 'paper_settings', 'main', 'notebook'),
)


def _layer(module: str) -> int:
    top = module.split('.')[1] if module.startswith('memjax.') else module
    for level, names in enumerate(LAYERS):
        if top in names:
            return level
    raise AssertionError(f'memjax.{top} is in no layer of LAYERS; add it')


def _imports(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith('memjax'):
            found.add(node.module)
            if node.module == 'memjax':
                found.update(f'memjax.{alias.name}' for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith('memjax.'))
    return {m for m in found if m != 'memjax'}


def test_imports_flow_one_way():
    against = []
    for path in sorted(PACKAGE.rglob('*.py')):
        module = 'memjax.' + '.'.join(path.relative_to(PACKAGE).with_suffix('').parts)
        if module.endswith('__init__') and module.count('.') == 1:
            continue
        for imported in _imports(path):
            if _layer(imported) > _layer(module):
                against.append(f'{module} imports {imported}')
    assert not against, 'imports against the flow:\n' + '\n'.join(against)


def test_the_layer_test_catches_a_wrong_import(tmp_path):
    path = tmp_path / 'loop.py'
    path.write_text('from memjax.report.summary import write_summary\n')
    assert _layer(next(iter(_imports(path)))) > _layer('memjax.train.loop')


def test_every_analysis_is_one_module_with_settings_and_run():
    names = registry.analysis_names()
    assert {'convergence', 'noisy_vs_clean', 'cka_matrix', 'stitching', 'finetune', 'gradients', 'rewinding',
            'retraining', 'neurons', 'example_tied'} <= set(names)
    for analysis in registry.analyses().values():
        assert analysis.module.__name__.endswith('.' + analysis.name), analysis.module.__name__
        for field in dataclasses.fields(analysis.settings):
            assert field.metadata.get('help'), f'{analysis.settings_key}.{field.name} has no help line'


def test_config_defaults_are_the_dataclass_defaults():
    config = base_config()
    for key, cls in registry.settings_classes().items():
        node = config.analysis[key].to_dict()
        assert set(node) == {f.name for f in dataclasses.fields(cls)}
        for field in dataclasses.fields(cls):
            assert node[field.name] == field.default, f'analysis.{key}.{field.name}'


def test_readme_tables_are_generated_from_the_settings():
    readme = (PACKAGE.parent / 'README.md').read_text()
    match = re.search(r'<!-- analysis-keys:begin -->\n(.*?)<!-- analysis-keys:end -->', readme, re.S)
    assert match, 'README lacks the analysis-keys markers'
    assert match.group(1).strip() == registry.markdown_tables().strip(), (
        'README analysis key tables are stale; regenerate with: python scripts/analysis_keys.py --write')
