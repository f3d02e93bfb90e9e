r"""The graph explorer: one self-contained HTML page of a :class:`~gdjax.graph.Graph`.

:func:`to_html` writes the page (``Graph.to_html`` and ``gdjax trace MODEL --html``);
:func:`check_html` writes the same page with a hand-written backprop laid over it
(``gdjax verify MODEL --html``). The page needs no network: its script and style are
inline (:mod:`gdjax.graph._explorer`, written for gdjax), and the numbers travel as JSON.

What the page shows, for an output ``J``:

* every node's value and adjoint ``dJ/dnode``; every scalar edge ``x → y`` labelled
  ``∂ p ← c``: the local partial ``p = ∂y/∂x`` and ``c = dJ/dy · p``, what flows back;
* a value used k > 1 times (orange) with its adjoint as the sum of the arrivals,
  ``dJ/dx = Σᵢ dJ/dyᵢ · ∂yᵢ/∂x`` (seed 004: −0.2 + 0.4 + 0.6 = 0.8);
* groups that collapse to one box and expand again: a jitted function (its inlined
  body), a *layer* (the named values ``z3, a3`` that end in the same number, with the
  unnamed steps and the parameters that feed only them), and a loop's outputs;
* a search box (by name) and, on a click, the node's full arrays (shape, min, max,
  mean, norm, and up to 4096 entries).
"""

from __future__ import annotations

import html as _html
import json
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gdjax.graph import _explorer
from gdjax.graph._overlay import overlay as _overlay
from gdjax.graph.render import _fmt, _shape_str

if TYPE_CHECKING:
    from gdjax.graph.graph import Graph, Node

__all__ = ["check_html", "iframe", "inline_html", "to_html"]

MAX_VALUES = 4096  # entries of one array written into the page
COLLAPSE_ABOVE = 24  # a graph with more nodes opens with its groups collapsed
_LOOPS = ("scan", "while", "cond")
_FILL = {"output": "#d3f9d8", "input": "#d0ebff", "const": "#f1f3f5", "named": "#fff3bf"}


def to_html(graph: Graph, path: str | Path | None = None, *, title: str = "") -> str:
    """The explorer page of ``graph`` (see the module docstring); written to ``path`` if given."""
    return _page(graph, title or f"gd.trace: {graph.outputs[0]}", path, None)


def check_html(
    graph: Graph,
    report: Any,
    path: str | Path | None = None,
    *,
    hand: Any = None,
    title: str = "",
) -> str:
    """The explorer with a check report laid over it: hand-written beside autodiff.

    Each node that a report row names (``"dL/du"`` → node ``u``; a gradient row
    ``"dL/dlayers[0].W"`` → the input ``params[0]['W']``) is coloured by the row: green
    where the hand-written adjoint agrees with autodiff, red where it does not, dark red
    and marked "first wrong" for ``report.first_wrong``, hatched orange where a row only
    inherits the error of another (``row.inherits``). Rows that name no node (N1's
    per-weight rows) are listed in the page's summary.

    Args:
      graph: ``gd.trace`` of the loss, at the point the hand-written values come from.
      report: a :class:`gdjax.check.Report` (read with ``getattr``: ``rows`` of ``name``,
        ``ok``, ``cause``, ``inherits``; ``first_wrong``).
      path: where to write the page; None writes nothing.
      hand: the hand-written backprop at the graph's point (a ``gd.Backprop``, or a
        ``(loss, grads, adjoints)`` tuple): shown beside autodiff's adjoint per node.
      title: the heading.

    Returns:
      the HTML text.
    """
    overlay = _overlay(graph, report, hand)
    subject = getattr(report, "subject", "")
    return _page(graph, title or f"hand vs autodiff: {subject}", path, overlay)


def inline_html(graph: Graph, height: int = 520) -> str:
    """The page inside an ``<iframe srcdoc>``: what ``Graph._repr_html_`` shows in Jupyter."""
    return iframe(to_html(graph), height)


def iframe(page: str, height: int = 520) -> str:
    """Any explorer page (from :func:`to_html` or :func:`check_html`) as an inline iframe."""
    return (
        f'<div><iframe srcdoc="{_html.escape(page, quote=True)}" style="width:100%;'
        f'height:{int(height)}px;border:1px solid #ddd" sandbox="allow-scripts"></iframe></div>'
    )


# -- the page -----------------------------------------------------------------------------


def _page(graph: Graph, title: str, path: str | Path | None, overlay: dict | None) -> str:
    data = _data(graph, overlay)
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    payload = payload.replace("<", "\\u003c")  # no "</script>" can end the block early
    summary = "" if overlay is None else overlay["summary"]
    text = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="generator" content="gdjax">
<title>{_html.escape(title)}</title>
<style>{_explorer.CSS}</style></head>
<body>
<div id="gd-bar"><h1>{_html.escape(title)}</h1>
<input id="gd-search" type="search" placeholder="search a node by name" aria-label="search">
<span id="gd-count"></span>
<button id="gd-collapse" type="button">collapse all</button>
<button id="gd-expand" type="button">expand all</button>
<button id="gd-zout" type="button">&minus;</button><button id="gd-zin" type="button">+</button>
<span class="gd-legend"><span style="background:#d0ebff">input</span><span
 style="background:#fff3bf">named</span><span style="background:#d3f9d8">output</span><span
 style="border-color:#e8590c;color:#d9480f">used &gt; once</span></span>
<span class="gd-k">edge label: &part; local partial &larr; what flows back</span></div>
{summary}
<div id="gd-main"><div id="gd-canvas"></div><div id="gd-detail"></div></div>
<script id="gd-data" type="application/json">{payload}</script>
<script>{_explorer.JS}</script>
</body></html>
"""
    if path is not None:
        Path(path).write_text(text, encoding="utf-8")
    return text


def _kind(graph: Graph, node: Node) -> str:
    if node.name in graph.outputs:
        return "output"
    if node.op in ("input", "const"):
        return node.op
    return "named" if node.name in graph._named else "op"


def _array(x: Any) -> dict[str, Any] | None:
    """Shape, summary and (up to MAX_VALUES) entries of one array, as JSON-ready strings."""
    if x is None:
        return None
    a = np.asarray(x)
    if a.dtype.kind == "V":  # float0: the cotangent of an integer
        a = np.zeros(a.shape)
    flat = a.ravel()
    out: dict[str, Any] = {
        "shape": list(a.shape),
        "dtype": _shape_str(a).split("[")[0],
        "size": int(a.size),
        "values": [_num(v) for v in flat[:MAX_VALUES]],
        "truncated": bool(a.size > MAX_VALUES),
    }
    if a.size and a.dtype.kind in "fiu":
        f = a.astype(np.float64)
        with np.errstate(all="ignore"):
            out.update(
                min=_num(np.nanmin(f)) if not np.isnan(f).all() else "nan",
                max=_num(np.nanmax(f)) if not np.isnan(f).all() else "nan",
                mean=_num(f.mean()),
                norm=_num(np.linalg.norm(f.ravel())),
            )
    return out


def _num(v: Any) -> str:
    v = v.item() if hasattr(v, "item") else v
    if isinstance(v, float):
        return f"{v:.6g}" if math.isfinite(v) else str(v)
    return str(v)


def _data(graph: Graph, overlay: dict | None) -> dict[str, Any]:
    checks = {} if overlay is None else overlay["nodes"]
    hands = {} if overlay is None else overlay["hand"]
    groups, member = _groups(graph)
    nodes = []
    for node in graph.nodes:
        kind = _kind(graph, node)
        fan = graph._fan_in_sum(node)
        why = ""
        if node.adjoint is None and "while loop" in node.note:
            why = "through a while loop"
        nodes.append(
            {
                "name": node.name,
                "op": node.op,
                "expr": node.expr,
                "kind": kind,
                "fill": _FILL.get(kind, "#ffffff"),
                "shape": ",".join(map(str, np.shape(node.value))) if np.ndim(node.value) else "",
                "dtype": _shape_str(node.value).split("[")[0],
                "value": _fmt(node.value),
                "adjoint": None if node.adjoint is None else _fmt(node.adjoint),
                "why": why,
                "fan": fan,
                "fanout": bool(fan),
                "note": node.note,
                "groups": member.get(node.name, []),
                "check": checks.get(node.name),
                "detail": {
                    "value": _array(node.value),
                    "adjoint": _array(node.adjoint),
                    "hand": _array(hands.get(node.name)),
                },
            }
        )
    edges = []
    for e in graph.edges:
        back = "-" if e.cotangent is None else _fmt(e.cotangent)
        label = ""
        if e.partial is not None:
            label = f"∂ {_fmt(e.partial)}" + ("" if e.cotangent is None else f"  ← {back}")
        edges.append({"src": e.src, "dst": e.dst, "label": label, "back": back})
    return {"nodes": nodes, "edges": edges, "groups": groups, "outputs": list(graph.outputs)}


# -- groups -------------------------------------------------------------------------------

_LAYER = re.compile(r"^(.*?[^\d#])(\d+)$")


def _groups(graph: Graph) -> tuple[list[dict[str, Any]], dict[str, list[str]]]:
    """The collapsible groups and, per node, the ids of the groups it is in (outermost first).

    Three kinds: the inlined calls the tracer recorded (``Graph._scopes``: a jitted
    function), layers (named values whose names end in the same number, when at least
    two numbers occur), and loops (the outputs of one scan/while/cond). A layer or a loop
    also takes in the unnamed nodes, and the first argument's leaves, used only inside it.
    """
    member: dict[str, list[str]] = {}
    info: dict[str, dict[str, Any]] = {}
    for name, scope in graph._scopes.items():
        for depth, key in enumerate(scope):
            gid = "jit:" + key
            if gid not in info:
                info[gid] = {"label": f"{key.split('@')[0]} (jit)", "parent": _parent(scope, depth)}
            member.setdefault(name, []).append(gid)

    assigned: dict[str, str] = {}  # node -> its layer or loop group
    numbered = {}
    for n in graph.nodes:
        m = _LAYER.match(n.name)
        if m and n.name in graph._named and n.name not in graph.outputs:
            numbered[n.name] = m.group(2)
    if len(set(numbered.values())) >= 2:
        for name, k in numbered.items():
            assigned[name] = f"layer:{k}:{_scope_of(graph, name)}"
    loops: dict[tuple, str] = {}
    for n in graph.nodes:
        if n.op in _LOOPS:
            key = (n.op, n.inputs, n.expr)
            loops.setdefault(key, f"loop:{len(loops) + 1}:{_scope_of(graph, n.name)}")
            assigned[n.name] = loops[key]
    _absorb(graph, assigned)

    labels: dict[str, list[str]] = {}
    for name, gid in assigned.items():
        labels.setdefault(gid, []).append(name)
    for gid, names in labels.items():
        kind, k = gid.split(":")[:2]
        named = [n for n in names if n in numbered or graph[n].op in _LOOPS]
        if kind == "layer":
            label = f"layer {k}: {', '.join(named)}"
        else:
            label = f"{graph[named[0]].op} {', '.join(named)}"
        scope = graph._scopes.get(named[0], ())
        info[gid] = {"label": label, "parent": "jit:" + scope[-1] if scope else None}
    for name, gid in assigned.items():
        member.setdefault(name, []).append(gid)

    sizes = {gid: sum(gid in gs for gs in member.values()) for gid in info}
    kept = {gid for gid, size in sizes.items() if size >= 2}  # a group of one is no group
    member = {n: [g for g in gs if g in kept] for n, gs in member.items()}
    groups = []
    for gid, g in info.items():
        if gid not in kept:
            continue
        names = [n for n, gs in member.items() if gid in gs]
        path, p = [gid], g["parent"]
        while p is not None:
            if p in kept:
                path.insert(0, p)
            p = info[p]["parent"]
        groups.append(
            {
                "id": gid,
                "label": g["label"],
                "path": path,
                "size": len(names),
                "exit": _exit(graph, set(names)),
                "collapsed": len(graph.nodes) > COLLAPSE_ABOVE,
            }
        )
    return groups, member


def _parent(scope: tuple[str, ...], depth: int) -> str | None:
    return "jit:" + scope[depth - 1] if depth else None


def _scope_of(graph: Graph, name: str) -> str:
    return "/".join(graph._scopes.get(name, ()))


def _absorb(graph: Graph, assigned: dict[str, str]) -> None:
    """Put into a group each unassigned node all of whose uses are inside that group
    (unnamed steps, constants, and leaves of the first argument), last node first."""
    first_arg = graph._arg_names[0] if graph._arg_names else None
    uses: dict[str, set[str]] = {}
    for e in graph.edges:
        uses.setdefault(e.src, set()).add(e.dst)
    for node in reversed(graph.nodes):
        if node.name in assigned or node.name in graph.outputs or node.name in graph._named:
            continue
        if node.op == "input":
            full = node.expr
            if first_arg is None or not full.startswith(first_arg):
                continue
        targets = {assigned.get(d) for d in uses.get(node.name, ())}
        if len(targets) == 1 and None not in targets:
            gid = targets.pop()
            if _scope_of(graph, node.name) == gid.split(":", 2)[2] or node.op == "input":
                assigned[node.name] = gid


def _exit(graph: Graph, names: set[str]) -> str:
    """The group's last node whose value is used outside it (shown on the collapsed box)."""
    leaving = [e.src for e in graph.edges if e.src in names and e.dst not in names] + [
        o for o in graph.outputs if o in names
    ]
    order = [n.name for n in graph.nodes]
    return max(leaving, key=order.index) if leaving else max(names, key=order.index)
