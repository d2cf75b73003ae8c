"""Programs compiled ahead of time from abstract shapes, cached for the life of the process.

Some computations are compiled before any data is at hand, to read their
memory (`memory_analysis`) or their cost (`cost_analysis`) first: the
critical-neuron search sizes its batch of examples from it, `memjax.plan`
estimates a config's cost. `compile_once(key, fn, *specs)` compiles
`jax.jit(fn)` for the abstract arguments `specs` (`jax.ShapeDtypeStruct`
trees, see `abstract`) once per process for each `key` (a hashable
description of what `fn` computes, e.g. (name, model, settings)) and shapes.
"""

from __future__ import annotations

import collections
from typing import Any, Callable

import jax

_COMPILED: collections.OrderedDict = collections.OrderedDict()
_CACHE_SIZE = 256


def abstract(tree: Any, lead: int | None = None) -> Any:
    """The tree's shapes and dtypes (`jax.ShapeDtypeStruct`), with a leading axis `lead` when given."""
    return jax.tree_util.tree_map(
        lambda a: jax.ShapeDtypeStruct(((lead,) if lead is not None else ()) + tuple(a.shape), a.dtype), tree)


def _shapes(specs: tuple) -> tuple:
    leaves, treedef = jax.tree_util.tree_flatten(specs)
    return treedef, tuple((tuple(leaf.shape), str(leaf.dtype)) for leaf in leaves)


def compile_once(key: Any, fn: Callable, *specs) -> Any:
    """`jax.jit(fn).lower(*specs).compile()`, reused for the same key and shapes (see the module doc)."""
    full_key = (key, _shapes(specs))
    compiled = _COMPILED.get(full_key)
    if compiled is None:
        compiled = jax.jit(fn).lower(*specs).compile()
        _COMPILED[full_key] = compiled
        if len(_COMPILED) > _CACHE_SIZE:
            _COMPILED.popitem(last=False)
    else:
        _COMPILED.move_to_end(full_key)
    return compiled
