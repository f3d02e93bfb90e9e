"""The traced graph: :class:`Node`, :class:`Edge` and :class:`Graph` (lookup, tables).

Drawing (:meth:`Graph.to_dot`, :meth:`Graph.save`) is done by :mod:`gdjax.graph.render`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gdjax.graph import render
from gdjax.graph.render import _fmt, _shape_str, _sum_str

__all__ = ["Edge", "Graph", "Node"]


class Node(NamedTuple):
    """One value of the computation.

    Attributes:
      name: the node's name (``"u"``, ``"a"``, ``"mul1"``, ``"J"``).
      op: ``"input"``, ``"const"``, ``"name"`` (an identity that only names its input),
        or the JAX primitive that computed it (``"mul"``, ``"logistic"``, ``"scan"``).
      inputs: names of the nodes it is computed from, in argument order.
      value: its value at the traced point.
      adjoint: ``d(output)/d(node)`` (with a cotangent: the cotangent pulled back), the
        node's shape; ``None`` for integer and boolean nodes, and for a node the output
        depends on through a ``while`` loop (no reverse-mode rule; its note says so).
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
    # node name -> keys of the inlined calls (jit, checkpoint) it was computed in
    _scopes: Mapping[str, tuple[str, ...]] = dataclasses.field(repr=False, default_factory=dict)

    # -- lookup ------------------------------------------------------------------------
    @property
    def named(self) -> frozenset[str]:
        """The nodes the traced function named with ``gd.name``."""
        return self._named

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
        return render.to_dot(self)

    def to_html(self, path: str | Path | None = None, *, title: str = "") -> str:
        """The interactive explorer: one self-contained HTML page (no network needed).

        The graph is laid out left to right; every node shows its value and adjoint, every
        scalar edge its local partial ∂dst/∂src and what flows back, a value used more than
        once its adjoint as the sum of the arrivals. Groups (a layer ``z3, a3``, a jitted
        function, a scan's outputs) collapse to one box and expand again; a search box
        finds a node by name; clicking a node shows its full arrays. See
        :mod:`gdjax.graph.html`.

        Args:
          path: where to write the page (UTF-8); None writes nothing.
          title: the page's heading (default: the output's name).

        Returns:
          the HTML text.
        """
        from gdjax.graph import html

        return html.to_html(self, path, title=title)

    def _repr_html_(self) -> str:
        """Jupyter shows the explorer inline (in an iframe, so its script runs sandboxed)."""
        from gdjax.graph import html

        return html.inline_html(self)

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
        return render.save(self, path, engine=engine)
