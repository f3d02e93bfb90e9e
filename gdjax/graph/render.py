"""Views of a :class:`~gdjax.graph.Graph`: number formatting, DOT text, and drawings.

A drawing is made by the Graphviz ``dot`` binary when it is installed, else by a simple
layered matplotlib figure.
"""

from __future__ import annotations

import shutil
import subprocess
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

if TYPE_CHECKING:
    from gdjax.graph.graph import Graph, Node

# --------------------------------------------------------------------------------------
# Formatting.
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


# --------------------------------------------------------------------------------------
# DOT text.
# --------------------------------------------------------------------------------------


def to_dot(graph: Graph) -> str:
    """Graphviz DOT of ``graph``: see :meth:`gdjax.graph.Graph.to_dot`."""
    ids = {n.name: f"n{i}" for i, n in enumerate(graph.nodes)}
    fan = {n.name for n in graph.nodes if graph._fans_out(n)}
    lines = [
        "digraph gdjax {",
        "  rankdir=LR;",
        '  node [shape=box, style="rounded,filled", fillcolor=white, '
        'fontname="Helvetica", fontsize=11];',
        '  edge [fontname="Helvetica", fontsize=9, color="#555555"];',
    ]
    for node in graph.nodes:
        attrs = {"label": "\\n".join(_dot_escape(s) for s in _label_lines(graph, node))}
        attrs["fillcolor"] = _color(graph, node)
        if node.name in fan:
            attrs.update(color="#e8590c", penwidth="2")
        body = ", ".join(f'{k}="{v}"' for k, v in attrs.items())
        lines.append(f"  {ids[node.name]} [{body}];")
    for edge in graph.edges:
        attrs = {}
        if edge.partial is not None:
            back = "" if edge.cotangent is None else f"  ← {_fmt(edge.cotangent)}"
            attrs["label"] = _dot_escape(f"∂ {_fmt(edge.partial)}{back}")
        if edge.src in fan:
            attrs["color"] = "#e8590c"
        body = ", ".join(f'{k}="{v}"' for k, v in attrs.items())
        lines.append(f"  {ids[edge.src]} -> {ids[edge.dst]}" + (f" [{body}]" if body else "") + ";")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _label_lines(graph: Graph, node: Node) -> list[str]:
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
        fan = graph._fan_in_sum(node)
        if fan:
            lines.append(f"= {fan}")
    if node.note:
        lines += textwrap.wrap(f"({node.note})", 44)
    return lines


def _color(graph: Graph, node: Node) -> str:
    if node.name in graph.outputs:
        return "#d3f9d8"
    if node.op == "input":
        return "#d0ebff"
    if node.op == "const":
        return "#f1f3f5"
    if node.name in graph._named:
        return "#fff3bf"
    return "white"


# --------------------------------------------------------------------------------------
# Drawing.
# --------------------------------------------------------------------------------------


def save(graph: Graph, path: str | Path, *, engine: str = "auto") -> Path:
    """Draw ``graph`` to ``path``: see :meth:`gdjax.graph.Graph.save`."""
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in ("svg", "png", "pdf", "dot"):
        raise ValueError(f"`path` must end in .svg, .png, .pdf or .dot, got {str(path)!r}.")
    if engine not in ("auto", "graphviz", "matplotlib"):
        raise ValueError(f"`engine` must be 'auto', 'graphviz' or 'matplotlib', got {engine!r}.")
    if fmt == "dot":
        path.write_text(to_dot(graph), encoding="utf-8")
        return path
    dot = _dot_binary()
    if engine == "graphviz" or (engine == "auto" and dot is not None):
        if dot is None:
            raise RuntimeError(
                "Graph.save: the Graphviz `dot` binary is not on PATH. Install it "
                "(Debian/Ubuntu: apt-get install graphviz; macOS: brew install "
                "graphviz) or pass engine='matplotlib'."
            )
        _render_graphviz(dot, to_dot(graph), path, fmt)
        return path
    _render_matplotlib(graph, path, fmt)
    return path


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
            "\n".join(_label_lines(graph, node)),
            ha="center",
            va="center",
            fontsize=7,
            bbox={
                "boxstyle": "round",
                "fc": _color(graph, node),
                "ec": "#e8590c" if node.name in fan else "#333333",
            },
        )
    xs, ys = zip(*pos.values())
    ax.set_xlim(min(xs) - 1.3, max(xs) + 1.3)
    ax.set_ylim(min(ys) - 0.9, max(ys) + 0.9)
    ax.axis("off")
    fig.savefig(path, format=fmt, bbox_inches="tight")
