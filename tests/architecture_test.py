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
    ('experiment', 'paper_settings', 'main', 'notebook', 'plan'),
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
    import importlib.util
    spec = importlib.util.spec_from_file_location('config_keys', PACKAGE.parent / 'scripts' / 'config_keys.py')
    config_keys = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(config_keys)
    readme = (PACKAGE.parent / 'README.md').read_text()
    for name, make in config_keys.BLOCKS.items():
        match = re.search(rf'<!-- {name}:begin -->\n(.*?)<!-- {name}:end -->', readme, re.S)
        assert match, f'README lacks the {name} markers'
        assert match.group(1).strip() == make().strip(), (
            f'README {name} tables are stale; regenerate with: python scripts/config_keys.py --write')


def _module_graph() -> dict[str, set[str]]:
    """module -> the memjax modules it imports (`from package import module` is an edge to the module)."""
    modules = {'memjax.' + '.'.join(p.relative_to(PACKAGE).with_suffix('').parts).removesuffix('.__init__')
               for p in PACKAGE.rglob('*.py')}
    graph = {}
    for path in sorted(PACKAGE.rglob('*.py')):
        module = 'memjax.' + '.'.join(path.relative_to(PACKAGE).with_suffix('').parts)
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith('memjax'):
                subs = {f'{node.module}.{a.name}' for a in node.names} & modules
                edges |= subs or {node.module}
            elif isinstance(node, ast.Import):
                edges |= {a.name for a in node.names if a.name.startswith('memjax.')}
        graph[module.removesuffix('.__init__')] = edges
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import circle among memjax's modules (depth-first search, one path per circle found)."""
    found, state = [], {}

    def visit(node, path):
        state[node] = 'open'
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph:
                continue
            if state.get(nxt) == 'open':
                found.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 'done'

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_no_import_circle_anywhere_even_inside_one_layer():
    assert not _cycles(_module_graph()), 'import circles: ' + '; '.join(' -> '.join(c) for c in _cycles(_module_graph()))
    assert _cycles({'a': {'b'}, 'b': {'a'}}) == [['a', 'b', 'a']]  # the search finds a circle when there is one
