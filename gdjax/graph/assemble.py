"""Naming the nodes and building the immutable :class:`~gdjax.graph.Graph`.

Inputs take their argument names and pytree paths, ``gd.name`` labels name their values,
the output is ``J`` unless named, and every other node gets a short name after its
operation (``mul1``, ``exp2``); expressions are written in those names (``b * c``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import jax

from gdjax.graph.build import _Builder, _edge_keys, _Lit, _Step
from gdjax.graph.graph import Edge, Graph, Node
from gdjax.graph.render import _fmt

_INFIX = {"add": "+", "sub": "-", "mul": "*", "div": "/", "pow": "**", "dot_general": "@"}


def _arg_names(f: Callable, n_args: int) -> list[str]:
    """Names of the first ``n_args`` positional arguments of ``f`` (``arg0`` if unknown)."""
    try:
        params = list(inspect.signature(f).parameters.values())
    except (TypeError, ValueError):
        return [f"arg{i}" for i in range(n_args)]
    names: list[str] = []
    for p in params:
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            names.append(p.name)
        elif p.kind is p.VAR_POSITIONAL:
            names += [f"{p.name}[{j}]" for j in range(n_args - len(names))]
    names += [f"arg{i}" for i in range(len(names), n_args)]
    return names[:n_args]


def _key_str(key: Any) -> str | None:
    """The short name a pytree key gives a leaf, if it has one (dict key, attribute)."""
    if isinstance(key, jax.tree_util.DictKey) and isinstance(key.key, str):
        return key.key
    if isinstance(key, jax.tree_util.GetAttrKey):
        return key.name
    return None


def _input_names(f: Callable, args: tuple, kwargs: dict) -> list[tuple[str, str]]:
    """(short, full) names of every leaf of ``(args, kwargs)``, in flattening order."""
    arg_names = _arg_names(f, len(args))
    out: list[tuple[str, str]] = []
    for path, _ in jax.tree_util.tree_flatten_with_path((args, kwargs))[0]:
        which, key, rest = path[0].idx, path[1], path[2:]
        base = arg_names[key.idx] if which == 0 else str(key.key)
        full = base + jax.tree_util.keystr(rest)
        short = _key_str(rest[-1]) if rest else base
        out.append((short or full, full))
    shorts = [s for s, _ in out]
    fulls = {full for _, full in out}
    return [
        (s if shorts.count(s) == 1 and (s == full or s not in fulls) else full, full)
        for s, full in out
    ]


def _assemble(
    b: _Builder,
    in_ids: list[int],
    out_ids: list[int],
    output_name: str | None,
    adjoints: list[Any],
    edge_cts: list[Any],
    partials: dict[tuple[int, int], Any],
    in_tree: Any,
    f: Callable,
    args: tuple,
) -> Graph:
    """Give every node its name, then build the immutable :class:`Graph`."""
    names: dict[int, str] = {}
    taken: set[str] = set()

    def claim(i: int, want: str) -> None:
        name, k = want, 1
        while name in taken:
            k += 1
            name = f"{want}#{k}"
        taken.add(name)
        names[i] = name

    for i, p in enumerate(b.protos):  # inputs and gd.name labels first, in order
        if p.label is not None:
            claim(i, p.label)
    base = output_name or "J"
    for k, i in enumerate(out_ids):
        if i not in names:
            claim(i, base if len(out_ids) == 1 else f"{base}[{k}]")
    counters: dict[str, int] = {}
    for i, p in enumerate(b.protos):
        if i not in names:
            stem = "const" if p.kind == "const" else b.steps[p.step].display
            while True:
                counters[stem] = counters.get(stem, 0) + 1
                if f"{stem}{counters[stem]}" not in taken:
                    break
            claim(i, f"{stem}{counters[stem]}")

    def atom_str(a: int | _Lit) -> str:
        return names[a] if isinstance(a, int) else _fmt(a.val)

    nodes = []
    for i, p in enumerate(b.protos):
        if p.kind in ("input", "const"):
            inputs: tuple[str, ...] = ()
            expr = p.path or names[i]
        else:
            step = b.steps[p.step]
            inputs = tuple(names[a] for a in step.atoms if isinstance(a, int))
            arg_strs = [atom_str(a) for a in step.atoms]
            expr = arg_strs[0] if p.kind == "name" else _expr(step, arg_strs)
        nodes.append(Node(names[i], p.op, inputs, p.value, adjoints[i], expr, p.note))

    edges = [
        Edge(
            names[b.steps[s].atoms[pos]],
            names[b.steps[s].outs[k]],
            partials.get((s, pos)) if len(b.steps[s].outs) == 1 else None,
            ct,
        )
        for (s, pos, k), ct in zip(_edge_keys(b), edge_cts)
    ]

    aliases = {b.protos[i].path: names[i] for i in in_ids if b.protos[i].path != names[i]}
    return Graph(
        nodes=tuple(nodes),
        edges=tuple(edges),
        inputs=tuple(names[i] for i in in_ids),
        outputs=tuple(names[i] for i in out_ids),
        _in_tree=in_tree,
        _aliases=aliases,
        _arg_names=tuple(_arg_names(f, len(args))),
        _named=frozenset(names[i] for i, p in enumerate(b.protos) if p.label and p.kind != "input"),
        _scopes={names[i]: p.scope for i, p in enumerate(b.protos) if p.scope},
    )


def _expr(step: _Step, args: list[str]) -> str:
    name = step.prim.name
    if name in _INFIX and len(args) == 2:
        return f"{args[0]} {_INFIX[name]} {args[1]}"
    if name == "integer_pow":
        return f"{args[0]}**{step.params['y']}"
    if name == "neg":
        return f"-{args[0]}"
    return f"{step.display}({', '.join(args)})"
