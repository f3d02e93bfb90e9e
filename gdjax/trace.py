r"""The computation graph of any JAX function, with every node's value and adjoint.

``gd.trace(f, *args)`` turns ``f`` into a jaxpr, evaluates it one equation at a time
keeping every intermediate value, then runs the reverse pass one equation at a time,
each primitive through its own VJP. For an output ``J`` and a node ``x`` whose value
feeds the nodes ``y₁ … y_k`` (fan-out), the adjoint is the sum of what arrives back
along each edge::

    dJ/dx = Σᵢ dJ/dyᵢ · ∂yᵢ/∂x            (the local partials ∂yᵢ/∂x are kept for scalar edges)

so the graph shows the picture the documents draw by hand: values flowing left to
right, adjoints flowing right to left, summed where a value fans out. The adjoints of
the inputs are exactly ``jax.grad`` of ``f``.

Names. Inputs take their argument names and pytree paths (``a`` for ``params["a"]``
when that is unambiguous, else ``params['a']``); a value tagged with
``gd.name(x, "u")`` inside ``f`` is the node ``u``; the output is ``J`` unless named;
everything else gets a short name after its operation (``mul1``, ``exp2``).

Nested computations. ``jit``/``closed_call``/``checkpoint`` bodies are inlined: their
equations become nodes of the graph. A function with its own derivative rule
(``jax.custom_jvp``/``custom_vjp``, e.g. ``jax.nn.relu``) is one node, differentiated by
its own rule, as ``jax.grad`` does. ``scan``, ``while`` and ``cond`` are one node each,
with a note. ``jax.nn.sigmoid`` is JAX's ``logistic`` primitive: one node, shown as
``sigmoid(z)``.

A name is marked in the jaxpr by ``name_p``, an identity primitive that
:func:`gdjax.name` binds only while :func:`trace` is tracing. A function that was
``jax.jit``-compiled and called *before* the trace keeps its cached jaxpr, in which the
names are missing: its nodes then get operation names.

Example::

    >>> import gdjax as gd, jax.numpy as jnp
    >>> g = gd.trace(gd.models.get("G1").loss, {"a": 5.0, "b": 3.0, "c": 2.0})
    >>> float(g["u"].value), float(g["u"].adjoint)
    (6.0, 3.0)
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import shutil
import subprocess
import textwrap
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import ClosedJaxpr, Jaxpr, Literal, Primitive
from jax.interpreters import ad, batching, mlir

from gdjax import naming

__all__ = ["Edge", "Graph", "Node", "cli_trace", "name_p", "trace"]

# --------------------------------------------------------------------------------------
# The name mark: an identity primitive that survives jit, grad, vmap and scan.
# --------------------------------------------------------------------------------------

name_p = Primitive("gdjax_name")
"""``gdjax_name[label=u] x = x``: marks the value the graph should call ``u``."""


def _name_impl(x: jax.Array, *, label: str) -> jax.Array:
    del label
    return x


def _name_jvp(primals: Sequence[Any], tangents: Sequence[Any], *, label: str):
    # The mark stays on the primal only; the tangent passes through untouched.
    return name_p.bind(primals[0], label=label), tangents[0]


def _name_transpose(ct: Any, x: Any, *, label: str) -> list[Any]:
    del x, label
    return [ct]


def _name_batch(args: Sequence[Any], dims: Sequence[Any], *, label: str):
    return name_p.bind(args[0], label=label), dims[0]


name_p.def_impl(_name_impl)
name_p.def_abstract_eval(lambda aval, *, label: aval)
ad.primitive_jvps[name_p] = _name_jvp
ad.primitive_transposes[name_p] = _name_transpose
batching.primitive_batchers[name_p] = _name_batch
mlir.register_lowering(name_p, mlir.lower_fun(_name_impl, multiple_results=False))


def _mark(x: Any, label: str) -> jax.Array:
    """The trace hook of :func:`gdjax.name`: bind the mark (identity) on ``x``."""
    return name_p.bind(jnp.asarray(x), label=label)


# --------------------------------------------------------------------------------------
# The graph.
# --------------------------------------------------------------------------------------


class Node(NamedTuple):
    """One value of the computation.

    Attributes:
      name: the node's name (``"u"``, ``"a"``, ``"mul1"``, ``"J"``).
      op: ``"input"``, ``"const"``, ``"name"`` (an identity that only names its input),
        or the JAX primitive that computed it (``"mul"``, ``"logistic"``, ``"scan"``).
      inputs: names of the nodes it is computed from, in argument order.
      value: its value at the traced point.
      adjoint: ``d(output)/d(node)`` (with a cotangent: the cotangent pulled back), the
        node's shape; ``None`` for integer and boolean nodes.
      expr: how it is computed, in the graph's names (``"b * c"``); for an input, its
        argument path (``"params['a']"``).
      note: why a node is special (a loop shown as one node, a custom derivative rule).
    """

    name: str
    op: str
    inputs: tuple[str, ...]
    value: jax.Array
    adjoint: jax.Array | None
    expr: str
    note: str = ""


class Edge(NamedTuple):
    """One use of a value: ``src`` is an input of ``dst``.

    Attributes:
      src, dst: node names.
      partial: the local derivative ∂dst/∂src when both are scalars, else ``None``.
      cotangent: what flows back along the edge, ``dJ/d(dst) · ∂dst/∂src`` (the shape
        of ``src``); ``src``'s adjoint is the sum of these over its outgoing edges.
        ``None`` when ``src`` is not differentiable (integer or boolean).
    """

    src: str
    dst: str
    partial: jax.Array | None
    cotangent: jax.Array | None


@dataclasses.dataclass(frozen=True)
class Graph:
    """The traced graph: nodes in evaluation order and the edges between them.

    ``graph["u"]`` is the node named ``u`` (an input may also be looked up by its full
    path, ``graph["params['a']"]``). Views: :meth:`table`, :meth:`to_dot`, :meth:`save`.
    """

    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    _in_tree: Any = dataclasses.field(repr=False, default=None)
    _aliases: Mapping[str, str] = dataclasses.field(repr=False, default_factory=dict)
    _arg_names: tuple[str, ...] = dataclasses.field(repr=False, default=())
    _named: frozenset[str] = dataclasses.field(repr=False, default=frozenset())

    # -- lookup ------------------------------------------------------------------------
    def _index(self) -> dict[str, Node]:
        return {n.name: n for n in self.nodes}

    def __getitem__(self, name: str) -> Node:
        index = self._index()
        key = self._aliases.get(name, name)
        if key not in index:
            raise KeyError(
                f"No node named {name!r}. Nodes: {', '.join(index)}. Name an intermediate "
                f"with gd.name(x, {name!r}) inside the traced function."
            )
        return index[key]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._aliases.get(name, name) in self._index()

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    @property
    def output(self) -> Node:
        """The output node (the first one when ``f`` returns several arrays)."""
        return self[self.outputs[0]]

    def consumers(self, name: str) -> tuple[Edge, ...]:
        """The edges leaving ``name``: one per use of its value (more than one: fan-out)."""
        key = self[name].name
        return tuple(e for e in self.edges if e.src == key)

    def grads(self, argnum: int | str = 0) -> Any:
        """The adjoints of one argument, shaped like it: ``jax.grad(f, argnums=argnum)``.

        Args:
          argnum: a positional index, or the name of a keyword argument.

        Integer and boolean leaves hold ``None``.
        """
        leaves = [self[n].adjoint for n in self.inputs]
        args, kwargs = jax.tree_util.tree_unflatten(self._in_tree, leaves)
        if isinstance(argnum, int) and not isinstance(argnum, bool):
            if not -len(args) <= argnum < len(args):
                raise ValueError(
                    f"`argnum` = {argnum}, but f was traced with {len(args)} positional "
                    f"argument(s). Pass an index in range or a keyword argument's name."
                )
            return args[argnum]
        if isinstance(argnum, str):
            if argnum in kwargs:
                return kwargs[argnum]
            if argnum in self._arg_names[: len(args)]:
                return args[self._arg_names.index(argnum)]
            raise ValueError(
                f"`argnum` = {argnum!r} is not an argument of the traced call. Arguments: "
                f"{', '.join([*self._arg_names[: len(args)], *kwargs])}."
            )
        raise TypeError(f"`argnum` must be an int or a str, got {argnum!r}.")

    # -- views -------------------------------------------------------------------------
    def table(self) -> str:
        """A text table: name, op, expression, shape, value, adjoint, and fan-out sums.

        Arrays of more than four entries show ``mean m in [min, max]``. The last column
        shows, for a value used more than once, the adjoint as the sum of what arrives
        along each use (seed 004's −0.2 + 0.4 + 0.6 = 0.8).
        """
        header = ("name", "op", "expression", "shape", "value", "adjoint", "adjoint is the sum")
        rows = [header]
        for node in self.nodes:
            rows.append(
                (
                    node.name,
                    node.op,
                    node.expr,
                    _shape_str(node.value),
                    _fmt(node.value),
                    "-" if node.adjoint is None else _fmt(node.adjoint),
                    self._fan_in_sum(node),
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        notes = [f"  {n.name}: {n.note}" for n in self.nodes if n.note]
        if notes:
            lines += ["", "notes:", *notes]
        return "\n".join(lines)

    def arrivals(self, name: str) -> list[jax.Array]:
        """What arrives back at ``name`` from each use of its value; they sum to its adjoint.

        One entry per outgoing edge, except that a scalar broadcast to k places (a
        ``broadcast_in_dim`` consumer) counts as k uses, one per entry of the broadcast's
        adjoint: the fan-out of seed 004 written as a vector.
        """
        node = self[name]
        if node.adjoint is None:
            return []
        index = self._index()
        out: list[jax.Array] = []
        for edge in self.consumers(name):
            dst = index[edge.dst]
            if (
                dst.op == "broadcast_in_dim"
                and np.ndim(node.value) == 0
                and dst.adjoint is not None
            ):
                out += list(jnp.ravel(dst.adjoint))
            else:
                out.append(edge.cotangent)
        return out

    def _fans_out(self, node: Node) -> bool:
        return len(self.arrivals(node.name)) > 1

    def _fan_in_sum(self, node: Node) -> str:
        parts = self.arrivals(node.name)
        if len(parts) < 2:
            return ""
        if np.ndim(node.value) == 0 and len(parts) <= 8:
            return _sum_str(parts)
        return f"sum of {len(parts)} uses"

    def to_dot(self) -> str:
        """Graphviz DOT: every node with its value and adjoint; edges with ∂ and ←.

        Inputs are blue, named values yellow, outputs green. A scalar edge is labelled
        ``∂ p  ← c``: the local partial and what flows back along it. A value used more
        than once (fan-out) has an orange border and orange edges, and its label shows
        its adjoint as the sum of what arrives.
        """
        ids = {n.name: f"n{i}" for i, n in enumerate(self.nodes)}
        fan = {n.name for n in self.nodes if self._fans_out(n)}
        lines = [
            "digraph gdjax {",
            "  rankdir=LR;",
            '  node [shape=box, style="rounded,filled", fillcolor=white, '
            'fontname="Helvetica", fontsize=11];',
            '  edge [fontname="Helvetica", fontsize=9, color="#555555"];',
        ]
        for node in self.nodes:
            attrs = {"label": "\\n".join(_dot_escape(s) for s in self._label_lines(node))}
            attrs["fillcolor"] = self._color(node)
            if node.name in fan:
                attrs.update(color="#e8590c", penwidth="2")
            body = ", ".join(f'{k}="{v}"' for k, v in attrs.items())
            lines.append(f"  {ids[node.name]} [{body}];")
        for edge in self.edges:
            attrs = {}
            if edge.partial is not None:
                back = "" if edge.cotangent is None else f"  ← {_fmt(edge.cotangent)}"
                attrs["label"] = _dot_escape(f"∂ {_fmt(edge.partial)}{back}")
            if edge.src in fan:
                attrs["color"] = "#e8590c"
            body = ", ".join(f'{k}="{v}"' for k, v in attrs.items())
            lines.append(
                f"  {ids[edge.src]} -> {ids[edge.dst]}" + (f" [{body}]" if body else "") + ";"
            )
        lines.append("}")
        return "\n".join(lines) + "\n"

    def _label_lines(self, node: Node) -> list[str]:
        if node.op == "input":
            lines = [node.name] if node.expr == node.name else [node.name, node.expr]
        elif node.op == "const":
            lines = [f"{node.name} (constant)"]
        else:
            lines = [f"{node.name} = {node.expr}"]
        if np.ndim(node.value) > 0:
            lines.append(_shape_str(node.value))
        lines.append(f"value {_fmt(node.value)}")
        if node.adjoint is not None:
            lines.append(f"adjoint {_fmt(node.adjoint)}")
            fan = self._fan_in_sum(node)
            if fan:
                lines.append(f"= {fan}")
        if node.note:
            lines += textwrap.wrap(f"({node.note})", 44)
        return lines

    def _color(self, node: Node) -> str:
        if node.name in self.outputs:
            return "#d3f9d8"
        if node.op == "input":
            return "#d0ebff"
        if node.op == "const":
            return "#f1f3f5"
        if node.name in self._named:
            return "#fff3bf"
        return "white"

    def save(self, path: str | Path, *, engine: str = "auto") -> Path:
        """Draw the graph to ``path``: ``.svg``, ``.png``, ``.pdf``, or ``.dot`` (DOT text).

        Args:
          path: the file to write; its suffix picks the format.
          engine: ``"graphviz"`` (the ``dot`` binary; Debian: ``apt-get install
            graphviz``), ``"matplotlib"`` (a simple layered drawing), or ``"auto"``:
            graphviz when ``dot`` is on PATH, else matplotlib.

        Returns:
          the path written.

        Raises:
          ValueError: unknown suffix or engine.
          RuntimeError: no engine is available, or ``dot`` fails.
        """
        path = Path(path)
        fmt = path.suffix.lower().lstrip(".")
        if fmt not in ("svg", "png", "pdf", "dot"):
            raise ValueError(f"`path` must end in .svg, .png, .pdf or .dot, got {str(path)!r}.")
        if engine not in ("auto", "graphviz", "matplotlib"):
            raise ValueError(
                f"`engine` must be 'auto', 'graphviz' or 'matplotlib', got {engine!r}."
            )
        if fmt == "dot":
            path.write_text(self.to_dot(), encoding="utf-8")
            return path
        dot = _dot_binary()
        if engine == "graphviz" or (engine == "auto" and dot is not None):
            if dot is None:
                raise RuntimeError(
                    "Graph.save: the Graphviz `dot` binary is not on PATH. Install it "
                    "(Debian/Ubuntu: apt-get install graphviz; macOS: brew install "
                    "graphviz) or pass engine='matplotlib'."
                )
            _render_graphviz(dot, self.to_dot(), path, fmt)
            return path
        _render_matplotlib(self, path, fmt)
        return path


# --------------------------------------------------------------------------------------
# Tracing: jaxpr -> forward values -> reverse pass.
# --------------------------------------------------------------------------------------

# Call-like primitives whose body is inlined into the graph.
_INLINE = frozenset({"jit", "pjit", "closed_call", "core_call", "checkpoint", "remat"})
# Shorter display names for some primitives.
_DISPLAY = {
    "logistic": "sigmoid",
    "integer_pow": "pow",
    "reduce_sum": "sum",
    "reduce_max": "max",
    "reduce_min": "min",
    "reduce_prod": "prod",
    "dot_general": "dot",
    "convert_element_type": "convert",
    "broadcast_in_dim": "broadcast",
    "custom_jvp_call": "custom_jvp",
    "custom_vjp_call": "custom_vjp",
}
_INFIX = {"add": "+", "sub": "-", "mul": "*", "div": "/", "pow": "**", "dot_general": "@"}


class _Lit(NamedTuple):
    """A literal constant inside a jaxpr equation (not a node)."""

    val: Any


@dataclasses.dataclass
class _Proto:
    """A node while the graph is being built (names are given at the end)."""

    kind: str  # "input" | "const" | "op" | "name"
    op: str
    value: Any
    label: str | None = None
    path: str = ""
    step: int = -1
    note: str = ""


@dataclasses.dataclass
class _Step:
    """One primitive application: ``outs = prim.bind(*atoms, **params)``."""

    prim: Any
    params: dict[str, Any]
    ctx: Any
    atoms: list[int | _Lit]
    outs: list[int]
    display: str

    def call(self, *vals: Any) -> Any:
        with self.ctx.manager:
            out = self.prim.bind(*vals, **self.prim.get_bind_params(self.params))
        return list(out) if self.prim.multiple_results else out


class _Builder:
    """Walks a jaxpr, inlining call bodies, into a flat list of steps on node ids.

    Nodes computed by a step hold their abstract value (shape, dtype) until
    :func:`_forward` evaluates them.
    """

    def __init__(self) -> None:
        self.protos: list[_Proto] = []
        self.steps: list[_Step] = []

    def new(self, proto: _Proto) -> int:
        self.protos.append(proto)
        return len(self.protos) - 1

    def walk(self, jaxpr: Jaxpr, consts: Sequence[int | _Lit], args: Sequence[int | _Lit]):
        env: dict[Any, int | _Lit] = {}
        env.update(zip(jaxpr.constvars, consts))
        env.update(zip(jaxpr.invars, args))

        def read(v: Any) -> int | _Lit:
            return _Lit(v.val) if isinstance(v, Literal) else env[v]

        for eqn in jaxpr.eqns:
            atoms = [read(v) for v in eqn.invars]
            prim = eqn.primitive
            if prim is name_p:
                env[eqn.outvars[0]] = self.named(atoms[0], eqn)
            elif prim.name in _INLINE and _sub_jaxpr(eqn.params) is not None:
                sub, sub_consts = _sub_jaxpr(eqn.params)
                const_ids = [self.new(_Proto("const", "const", jnp.asarray(c))) for c in sub_consts]
                env.update(zip(eqn.outvars, self.walk(sub, const_ids, atoms)))
            elif _is_noop_convert(eqn):
                env[eqn.outvars[0]] = atoms[0]
            else:
                env.update(zip(eqn.outvars, self.apply(eqn, atoms)))
        return [read(v) for v in jaxpr.outvars]

    def named(self, atom: int | _Lit, eqn: Any) -> int:
        label = eqn.params["label"]
        if isinstance(atom, _Lit):
            return self.new(_Proto("const", "const", jnp.asarray(atom.val), label=label))
        proto = self.protos[atom]
        if proto.kind == "op" and proto.label is None:
            proto.label = label
            return atom
        # An input or an already named value: a separate identity node carries the name.
        return self.apply(eqn, [atom], kind="name", label=label)[0]

    def apply(self, eqn: Any, atoms: list[int | _Lit], kind: str = "op", label=None) -> list[int]:
        prim = eqn.primitive
        display, note = _describe(prim, eqn.params)
        step = _Step(prim, dict(eqn.params), eqn.ctx, atoms, [], display)
        op = "name" if kind == "name" else prim.name
        step.outs = [
            self.new(_Proto(kind, op, v.aval, label=label, step=len(self.steps), note=note))
            for v in eqn.outvars
        ]
        self.steps.append(step)
        return step.outs


def _sub_jaxpr(params: Mapping[str, Any]) -> tuple[Jaxpr, list[Any]] | None:
    sub = params.get("jaxpr", params.get("call_jaxpr"))
    if isinstance(sub, ClosedJaxpr):
        return sub.jaxpr, list(sub.consts)
    if isinstance(sub, Jaxpr):
        return sub, []
    return None


def _is_noop_convert(eqn: Any) -> bool:
    """``convert_element_type`` that only drops weak typing: the same value."""
    if eqn.primitive.name != "convert_element_type":
        return False
    (x,), (y,) = eqn.invars, eqn.outvars
    return x.aval.dtype == y.aval.dtype and x.aval.shape == y.aval.shape


def _inner_labels(params: Mapping[str, Any]) -> list[str]:
    """Labels of ``gd.name`` marks inside the nested jaxprs of an equation."""
    found: list[str] = []

    def visit(jaxpr: Jaxpr) -> None:
        for eqn in jaxpr.eqns:
            if eqn.primitive is name_p and eqn.params["label"] not in found:
                found.append(eqn.params["label"])
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                visit(sub)

    for sub in jax.extend.core.jaxprs_in_params(params):
        visit(sub)
    return found


def _describe(prim: Any, params: Mapping[str, Any]) -> tuple[str, str]:
    """(display name, note) for an equation shown as one node."""
    name = prim.name
    if name in ("custom_jvp_call", "custom_vjp_call"):
        sub = params.get("call_jaxpr")
        fname = getattr(getattr(getattr(sub, "jaxpr", None), "debug_info", None), "func_name", "")
        kind = name.removesuffix("_call")
        display = fname or _DISPLAY[name]
        return display, f"{kind} function shown as one node; its own derivative rule is used"
    subs = list(jax.extend.core.jaxprs_in_params(params))
    if not subs:
        return _DISPLAY.get(name, name), ""
    inner = _inner_labels(params)
    where = f"; names inside: {', '.join(inner)}" if inner else ""
    if name == "scan":
        what = f"scan over {params['length']} steps shown as one node"
    elif name == "while":
        what = "while loop shown as one node"
    elif name == "cond":
        what = f"cond with {len(params['branches'])} branches shown as one node"
    else:
        what = f"{name} with a nested computation shown as one node"
    return _DISPLAY.get(name, name), what + where


def _is_float(x: Any) -> bool:
    """True for a float or complex array, abstract value or literal."""
    dtype = x.dtype if hasattr(x, "dtype") else jnp.result_type(x)
    return jnp.issubdtype(dtype, jnp.inexact)


def _zero_cotangent(x: Any) -> Any:
    if _is_float(x):
        return jnp.zeros_like(x)
    return np.zeros(np.shape(x), dtype=jax.dtypes.float0)


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


def _check_leaves(names: Sequence[tuple[str, str]], leaves: Sequence[Any]) -> None:
    for (_, full), leaf in zip(names, leaves):
        if isinstance(leaf, jax.Array | np.ndarray | np.generic | bool | int | float | complex):
            continue
        raise TypeError(
            f"gd.trace: argument `{full}` is a {type(leaf).__name__}, not an array. Pass "
            f"arrays (or numbers) only; bind other settings with functools.partial or a "
            f"lambda, e.g. gd.trace(lambda params: f(params, {full.split('[')[0]}), params)."
        )


def _traceable_error(f: Callable, err: Exception) -> TypeError:
    fname = getattr(f, "__name__", repr(f))
    return TypeError(
        f"gd.trace: `f` ({fname}) cannot be traced by JAX: it turns a traced value into a "
        f"Python or NumPy value (float(x), np.asarray(x), `if x > 0:`, ...). Write it with "
        f"jax.numpy and jnp.where / jax.lax.cond instead. JAX said: "
        f"{str(err).splitlines()[0]}"
    )


def trace(
    f: Callable[..., Any],
    *args: Any,
    cotangent: Any = None,
    output_name: str | None = None,
    **kwargs: Any,
) -> Graph:
    """Trace ``f(*args, **kwargs)`` into a :class:`Graph` of values and adjoints.

    Forward: every equation of ``jax.make_jaxpr(f)`` is evaluated and its value kept.
    Backward: from the seed ``dJ/dJ = 1`` (or ``cotangent``), each equation, last to
    first, pulls the adjoints of its outputs back to its inputs with the primitive's
    own VJP; contributions to a value used several times are summed:
    ``dJ/dx = Σ_{edges x→y} dJ/dy · ∂y/∂x``.

    Args:
      f: a JAX-traceable function of arrays (pytrees of arrays).
      *args, **kwargs: the point to evaluate at; every leaf is an input node named by
        its argument and pytree path.
      cotangent: required when ``f``'s output is not one scalar: a pytree like the
        output, pulled back instead of 1 (the graph then holds a vector-Jacobian
        product).
      output_name: the name of an output that ``f`` did not name with ``gd.name``
        (default ``"J"``).

    Returns:
      the :class:`Graph`; ``graph.grads(i)`` equals ``jax.grad(f, argnums=i)``.

    Raises:
      TypeError: ``f`` is not callable or not traceable, or an argument is not an array.
      ValueError: the output is not a scalar and no ``cotangent`` is given, or the
        cotangent does not match the output.
    """
    if not callable(f):
        raise TypeError(f"gd.trace: `f` must be a callable, got {type(f).__name__}.")
    if output_name is not None and (not isinstance(output_name, str) or not output_name):
        raise TypeError(f"gd.trace: `output_name` must be a non-empty string, got {output_name!r}.")
    leaves, in_tree = jax.tree_util.tree_flatten((args, kwargs))
    names = _input_names(f, args, kwargs)
    _check_leaves(names, leaves)
    leaves = [jnp.asarray(x) for x in leaves]

    out_tree: list[Any] = []

    def flat_fun(*flat: Any) -> list[Any]:
        a, k = jax.tree_util.tree_unflatten(in_tree, flat)
        outs, tree = jax.tree_util.tree_flatten(f(*a, **k))
        out_tree.append(tree)
        return outs

    try:
        with naming.hooked(_mark):
            closed = jax.make_jaxpr(flat_fun)(*leaves)
    except jax.errors.JAXTypeError as err:
        raise _traceable_error(f, err) from err

    b = _Builder()
    in_ids = [
        b.new(_Proto("input", "input", x, label=short, path=full))
        for (short, full), x in zip(names, leaves)
    ]
    const_ids = [b.new(_Proto("const", "const", jnp.asarray(c))) for c in closed.consts]
    out_atoms = b.walk(closed.jaxpr, const_ids, in_ids)
    out_ids = [
        b.new(_Proto("const", "const", jnp.asarray(a.val))) if isinstance(a, _Lit) else a
        for a in out_atoms
    ]
    seeds = _seeds(b, out_ids, out_tree[0], cotangent)
    _forward(b)
    adjoints, edge_cts, partials = _reverse(b, out_ids, seeds)
    return _assemble(
        b, in_ids, out_ids, output_name, adjoints, edge_cts, partials, in_tree, f, args
    )


def _forward(b: _Builder) -> None:
    """Evaluate every step in order (one compiled program) and keep every value."""
    sources = [i for i, p in enumerate(b.protos) if p.kind in ("input", "const")]

    def run(source_values: list[jax.Array]) -> list[jax.Array]:
        vals = dict(zip(sources, source_values))
        for step in b.steps:
            out = step.call(*[vals[a] if isinstance(a, int) else a.val for a in step.atoms])
            vals.update(zip(step.outs, out if step.prim.multiple_results else [out]))
        return [vals[i] for i in range(len(b.protos))]

    values = jax.jit(run)([b.protos[i].value for i in sources])
    for proto, value in zip(b.protos, values):
        proto.value = value


def _seeds(b: _Builder, out_ids: list[int], out_tree: Any, cotangent: Any) -> list[Any]:
    """The cotangent of each output: 1 for a scalar output, else the given one."""
    outs = [b.protos[i].value for i in out_ids]
    if cotangent is None:
        if len(outs) != 1 or np.shape(outs[0]) != () or not _is_float(outs[0]):
            shapes = ", ".join(f"{o.dtype}{list(np.shape(o))}" for o in outs)
            raise ValueError(
                f"gd.trace: `f` must return one float scalar (the J whose adjoints the graph "
                f"shows), but it returns {shapes or 'nothing'}. Reduce it (e.g. jnp.sum) or "
                f"pass `cotangent=` shaped like the output to pull it back instead."
            )
        return [None]
    cts, ct_tree = jax.tree_util.tree_flatten(cotangent)
    if ct_tree != out_tree:
        raise ValueError(
            f"gd.trace: `cotangent` must have the structure of f's output.\n"
            f"  cotangent: {ct_tree}\n  output: {out_tree}"
        )
    seeds = []
    for ct, out in zip(cts, outs):
        if np.shape(ct) != np.shape(out):
            raise ValueError(
                f"gd.trace: `cotangent` has shape {np.shape(ct)} where f's output has shape "
                f"{np.shape(out)}. Pass a cotangent shaped like the output."
            )
        if not _is_float(out):
            raise ValueError(
                f"gd.trace: an output of `f` has dtype {out.dtype}, which has no adjoint. "
                f"Return float arrays only."
            )
        seeds.append(np.asarray(ct, dtype=out.dtype))
    return seeds


def _reverse(b: _Builder, out_ids: list[int], seeds: list[Any]):
    """The reverse pass: each equation's own VJP, adjoints summed at fan-out.

    Runs as one compiled program. ``seeds[k]`` is the cotangent of output ``k`` (None:
    1 for the scalar output). Returns the adjoint of every node (None if not float), the
    cotangent along every edge in :func:`_edge_keys` order, and ∂out/∂in per (step,
    input position) for scalar edges.
    """

    def run(values: list[jax.Array], seeds: list[Any]):
        adj: dict[int, Any] = {}

        def add(node: int, ct: Any) -> None:
            adj[node] = ct if node not in adj else adj[node] + ct

        for node, seed in zip(out_ids, seeds):
            add(node, jnp.ones_like(values[node]) if seed is None else seed)
        edge_cts: dict[tuple[int, int, int], Any] = {}
        partials: dict[tuple[int, int], Any] = {}
        for s in reversed(range(len(b.steps))):
            step = b.steps[s]
            vals = [values[a] if isinstance(a, int) else a.val for a in step.atoms]
            diff = [
                i for i, a in enumerate(step.atoms) if isinstance(a, int) and _is_float(vals[i])
            ]
            live = [k for k, o in enumerate(step.outs) if o in adj]
            if not diff or not live:
                continue

            def fn(*d: Any, vals=vals, diff=diff, step=step) -> Any:
                full = list(vals)
                for i, x in zip(diff, d):
                    full[i] = x
                return step.call(*full)

            outs, vjp = jax.vjp(fn, *[vals[i] for i in diff])
            out_list = outs if step.prim.multiple_results else [outs]
            zeros = [_zero_cotangent(o) for o in out_list]

            def pull(k: int, ct: Any, vjp=vjp, zeros=zeros, step=step) -> tuple[Any, ...]:
                cts = list(zeros)
                cts[k] = ct
                return vjp(cts if step.prim.multiple_results else cts[0])

            for k in live:
                for i, c in zip(diff, pull(k, adj[step.outs[k]])):
                    edge_cts[(s, i, k)] = c
                    add(step.atoms[i], c)
            if len(out_list) == 1 and np.shape(out_list[0]) == () and _is_float(out_list[0]):
                for i, p in zip(diff, pull(0, jnp.ones_like(out_list[0]))):
                    if np.shape(p) == ():
                        partials[(s, i)] = p
        adjoints = [
            adj.get(i, jnp.zeros_like(v)) if _is_float(v) else None for i, v in enumerate(values)
        ]
        edges = []
        for s, pos, k in _edge_keys(b):
            src = values[b.steps[s].atoms[pos]]
            edges.append(edge_cts.get((s, pos, k), jnp.zeros_like(src)) if _is_float(src) else None)
        return adjoints, edges, partials

    return jax.jit(run)([p.value for p in b.protos], seeds)


def _edge_keys(b: _Builder) -> list[tuple[int, int, int]]:
    """(step, input position, output index) of every edge, in evaluation order."""
    return [
        (s, pos, k)
        for s, step in enumerate(b.steps)
        for pos, a in enumerate(step.atoms)
        if isinstance(a, int)
        for k in range(len(step.outs))
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


# --------------------------------------------------------------------------------------
# Formatting and drawing.
# --------------------------------------------------------------------------------------


def _fmt(x: Any) -> str:
    """A number as a person writes it; a small array in full; a large one summarised."""
    a = np.asarray(x)
    if a.dtype == jax.dtypes.float0:
        return "0"
    if a.ndim == 0:
        v = a.item()
        return f"{v:.6g}" if isinstance(v, float) else str(v)
    if a.size <= 4:
        return "[" + ", ".join(_fmt(v) for v in a.ravel()) + "]"
    if a.dtype == bool:
        return f"{int(a.sum())} of {a.size} true"
    if np.iscomplexobj(a):
        return f"mean {a.mean():.4g}"
    return f"mean {a.mean():.4g} in [{a.min():.4g}, {a.max():.4g}]"


def _shape_str(x: Any) -> str:
    dtype = jnp.result_type(x)
    short = {"float": "f", "int": "i", "uint": "u", "complex": "c", "bool": "bool"}
    kind = next((v for k, v in short.items() if dtype.name.startswith(k)), dtype.name)
    bits = "" if kind == "bool" else str(dtype.itemsize * 8)
    return f"{kind}{bits}[{','.join(map(str, np.shape(x)))}]"


def _sum_str(parts: Sequence[Any]) -> str:
    out = ""
    for j, c in enumerate(parts):
        v = float(np.asarray(c))
        if j == 0:
            out = f"{v:.6g}"
        else:
            out += f" - {-v:.6g}" if v < 0 else f" + {v:.6g}"
    return out


def _dot_escape(s: str) -> str:
    return s.replace("\\", "\\\\").replace('"', '\\"')


def _dot_binary() -> str | None:
    """The Graphviz ``dot`` executable, or None when it is not installed."""
    return shutil.which("dot")


def _render_graphviz(dot: str, source: str, path: Path, fmt: str) -> None:
    done = subprocess.run(
        [dot, f"-T{fmt}", "-o", str(path)],
        input=source.encode("utf-8"),
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"Graph.save: `dot -T{fmt}` failed: {done.stderr.decode(errors='replace')}"
        )


def _render_matplotlib(graph: Graph, path: Path, fmt: str) -> None:
    """A layered drawing: column = longest path from an input (inputs just left of their
    first use), arrows left to right."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise RuntimeError(
            "Graph.save needs the Graphviz `dot` binary (apt-get install graphviz) or "
            "matplotlib (pip install matplotlib); neither is installed. Graph.to_dot() "
            "gives the DOT text without either."
        ) from None
    depth: dict[str, int] = {}
    for node in graph.nodes:
        depth[node.name] = 1 + max((depth[i] for i in node.inputs), default=-1)
    for node in graph.nodes:  # an input sits just left of its first use, not always in column 0
        uses = [depth[n.name] for n in graph.nodes if node.name in n.inputs]
        if not node.inputs and uses:
            depth[node.name] = min(uses) - 1
    columns: dict[int, list[str]] = {}
    for node in graph.nodes:
        columns.setdefault(depth[node.name], []).append(node.name)
    pos = {
        name: (2.6 * d, -1.4 * (j - (len(col) - 1) / 2))
        for d, col in columns.items()
        for j, name in enumerate(col)
    }
    tall = max(len(c) for c in columns.values())
    fig = Figure(figsize=(2.4 * len(columns) + 1, 1.3 * tall + 1))
    ax = fig.subplots()
    fan = {n.name for n in graph.nodes if graph._fans_out(n)}
    for edge in graph.edges:
        (x1, y1), (x2, y2) = pos[edge.src], pos[edge.dst]
        color = "#e8590c" if edge.src in fan else "#555555"
        skips = depth[edge.dst] - depth[edge.src] > 1  # bend it around the columns between
        ax.annotate(
            "",
            xy=(x2, y2),
            xytext=(x1, y1),
            arrowprops={
                "arrowstyle": "->",
                "color": color,
                "shrinkA": 38,
                "shrinkB": 38,
                "connectionstyle": f"arc3,rad={-0.3 if skips else 0.0}",
            },
        )
        if edge.partial is not None:
            ax.text(
                (x1 + x2) / 2,
                (y1 + y2) / 2 + 0.12,
                f"∂ {_fmt(edge.partial)}",
                fontsize=7,
                ha="center",
                color=color,
            )
    for node in graph.nodes:
        x, y = pos[node.name]
        ax.text(
            x,
            y,
            "\n".join(graph._label_lines(node)),
            ha="center",
            va="center",
            fontsize=7,
            bbox={
                "boxstyle": "round",
                "fc": graph._color(node),
                "ec": "#e8590c" if node.name in fan else "#333333",
            },
        )
    xs, ys = zip(*pos.values())
    ax.set_xlim(min(xs) - 1.3, max(xs) + 1.3)
    ax.set_ylim(min(ys) - 0.9, max(ys) + 0.9)
    ax.axis("off")
    fig.savefig(path, format=fmt, bbox_inches="tight")


# --------------------------------------------------------------------------------------
# Command line: gdjax trace MODEL_ID [--at JSON] [--svg FILE] [--png FILE] [--dot]
# --------------------------------------------------------------------------------------


def _params_at(text: str, example: Any) -> Any:
    """The example parameters with the values of the JSON ``text`` put in."""
    try:
        given = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(
            f"--at is not valid JSON ({err}). Example: --at '{{\"a\": 1.0}}'."
        ) from None
    return _merge(given, example, "--at")


def _merge(given: Any, example: Any, where: str) -> Any:
    if isinstance(example, Mapping):
        if not isinstance(given, Mapping):
            raise ValueError(f"{where} must be a JSON object with keys {sorted(example)}.")
        unknown = sorted(set(given) - set(example))
        if unknown:
            raise ValueError(
                f"{where} has unknown key(s) {unknown}; the model's parameters are "
                f"{sorted(example)}."
            )
        return {
            k: _merge(given[k], v, f"{where}[{k!r}]") if k in given else v
            for k, v in example.items()
        }
    if isinstance(example, list | tuple):
        if not isinstance(given, list) or len(given) != len(example):
            raise ValueError(f"{where} must be a JSON list of {len(example)} entries.")
        return type(example)(
            _merge(g, e, f"{where}[{i}]") for i, (g, e) in enumerate(zip(given, example))
        )
    try:
        value = np.asarray(given, dtype=np.asarray(example).dtype)
    except (TypeError, ValueError):
        raise ValueError(f"{where} must hold numbers, got {given!r}.") from None
    if value.shape != np.shape(example):
        raise ValueError(
            f"{where} has shape {value.shape}, but the model expects {np.shape(example)}."
        )
    return jnp.asarray(value)


def cli_trace(args: argparse.Namespace) -> int:
    """``gdjax trace MODEL_ID``: the model's graph at its example point (or ``--at``)."""
    from gdjax import models

    model = models.get(args.model)
    params, batch = model.example()
    if args.at is not None:
        params = _params_at(args.at, params)
    graph = trace(model.loss, params, batch)
    print(graph.to_dot() if args.dot else f"{model.id}: {model.title}\n\n{graph.table()}")
    for path in (args.svg, args.png):
        if path:
            print(f"wrote {graph.save(path)}")
    return 0
