"""Hand-written beside autodiff: a check report laid over the traced graph.

:func:`overlay` maps each row of a :class:`gdjax.check.Report` to the node it names and
gives it a status that :mod:`gdjax.graph.html` colours: ``ok`` (agrees), ``wrong``,
``first`` (the report's ``first_wrong``: the earliest step of the derivation that is
wrong in its own right) and ``inherited`` (wrong only because it is computed from a wrong
row, ``row.inherits``). The report is read with ``getattr`` defaults, so a report
without ``first_wrong``/``inherits``/``cause`` still draws.
"""

from __future__ import annotations

import html as _html
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from gdjax.graph.render import _fmt

if TYPE_CHECKING:
    from gdjax.graph.graph import Graph

__all__ = ["overlay"]


def overlay(graph: Graph, report: Any, hand: Any) -> dict[str, Any]:
    """Per node: the row's status, badge and hand-written value; the summary banner."""
    rows = list(getattr(report, "rows", ()) or ())
    hand_vals = _hand_values(graph, hand)
    first, inherited = _diagnosis(graph, report, rows)
    by_node: dict[str, dict[str, Any]] = {}
    unmapped = []
    for row in rows:
        name = str(getattr(row, "name", ""))
        node = _node_of(graph, name)
        ok = bool(getattr(row, "ok", getattr(row, "status", "") == "ok"))
        status_text = str(getattr(row, "status", "ok" if ok else "FAIL"))
        inherits = getattr(row, "inherits", inherited.get(name))
        cause = getattr(row, "cause", None) or getattr(row, "note", "") or ""
        if ok:
            status, badge = "ok", "agrees"
        elif name == first:
            status, badge = "first", "FIRST WRONG"
        elif inherits:
            status, badge = "inherited", f"inherits {inherits}"
        elif status_text == "UNPROBED":
            status, badge = "wrong", "not probed"
        else:
            status, badge = "wrong", "wrong"
        if node is None:
            unmapped.append((name, badge))
            continue
        h = hand_vals.get(node)
        if getattr(row, "kind", "") == "loss":  # the row checks the loss value itself
            h = getattr(hand, "loss", hand[0] if isinstance(hand, tuple) and hand else None)
        by_node[node] = {
            "row": name,
            "status": status,
            "badge": badge,
            "hand": "-" if h is None else _fmt(h),
            "cause": str(cause),
            "inherits": inherits,
        }
    return {"nodes": by_node, "hand": hand_vals, "summary": _summary(rows, first, unmapped)}


def _wrong(row: Any) -> bool:
    return not bool(getattr(row, "ok", True))


def _diagnosis(graph: Graph, report: Any, rows: list) -> tuple[str | None, dict[str, str]]:
    """``report.first_wrong`` and, for a report without the diagnosis fields, a stand-in.

    Backprop runs from the output back, so among the wrong rows the one whose node is
    evaluated last is the first wrong step; a wrong row whose node feeds that one (an
    ancestor) may only inherit its error.
    """
    if hasattr(report, "first_wrong"):
        return report.first_wrong, {}
    order = {n.name: i for i, n in enumerate(graph.nodes)}
    wrong = [
        (order[node], str(r.name))
        for r in rows
        if _wrong(r) and (node := _node_of(graph, str(getattr(r, "name", "")))) in order
    ]
    if not wrong:
        return None, {}
    first = max(wrong)[1]
    ancestors = _ancestors(graph, _node_of(graph, first))
    inherited = {
        name: first
        for _, name in wrong
        if name != first
        and _node_of(graph, name) in ancestors
        and not any(hasattr(r, "inherits") for r in rows)
    }
    return first, inherited


def _ancestors(graph: Graph, name: str | None) -> set[str]:
    parents = {n.name: n.inputs for n in graph.nodes}
    seen: set[str] = set()
    stack = list(parents.get(name, ()))
    while stack:
        x = stack.pop()
        if x not in seen:
            seen.add(x)
            stack.extend(parents.get(x, ()))
    return seen


def _summary(rows: list, first: str | None, unmapped: list[tuple[str, str]]) -> str:
    bad = [str(getattr(r, "name", "")) for r in rows if not getattr(r, "ok", True)]
    if not bad:
        text = f"hand-written backprop agrees with autodiff on all {len(rows)} checked quantities"
        return f'<div id="gd-summary" class="gd-allok">{_html.escape(text)}</div>'
    text = f"{len(bad)} of {len(rows)} quantities disagree with autodiff: {', '.join(bad)}."
    if first:
        text += f" First wrong step: {first}; the others downstream of it may only inherit it."
    more = ""
    if unmapped:
        cells = ", ".join(f"{n} ({b})" for n, b in unmapped)
        more = f"<br>rows not drawn as nodes: {_html.escape(cells)}"
    return f'<div id="gd-summary">{_html.escape(text)}{more}</div>'


def _node_of(graph: Graph, row_name: str) -> str | None:
    """The node a row names: ``dL/du`` → ``u``; ``dL/dlayers[0].W`` → ``params[0]['W']``."""
    sep = "/d" if "/d" in row_name else "/∂"  # dL/du, or a formula's ∂f/∂x
    if sep not in row_name:
        return graph.outputs[0] if row_name and row_name in (graph.outputs[0], "L", "J") else None
    target = row_name.split(sep, 1)[1]
    if (target in graph and graph[target].op != "input") or target in graph.inputs:
        return graph[target].name
    want = _keys(target)[1:]  # "layers[0].W" -> ["0", "W"]: the path below the argument
    if not want:
        return None
    hits = [n for n in graph.inputs if _keys(graph[n].expr)[-len(want) :] == want]
    return hits[0] if len(hits) == 1 else None


def _keys(path: str) -> list[str]:
    return re.findall(r"\w+", path)


def _hand_values(graph: Graph, hand: Any) -> dict[str, Any]:
    """Node name -> the hand-written adjoint (named intermediates and the first argument)."""
    if hand is None:
        return {}
    import jax

    parts = tuple(hand) if isinstance(hand, tuple) else (None, None, None)
    grads = getattr(hand, "grads", parts[1] if len(parts) > 1 else None)
    adjoints = getattr(hand, "adjoints", parts[2] if len(parts) > 2 else None) or {}
    out: dict[str, Any] = {}
    if isinstance(adjoints, Mapping):
        out.update({k: v for k, v in adjoints.items() if k in graph})
    if grads is not None:
        leaves = jax.tree_util.tree_leaves(grads)
        first = graph._arg_names[0] if graph._arg_names else ""
        names = [n for n in graph.inputs if graph[n].expr.startswith(first)]
        if len(leaves) == len(names):
            out.update(zip(names, leaves))
    return out
