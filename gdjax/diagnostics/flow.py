r"""Gradient flow inside a run, and where a non-finite value first appeared.

:func:`gradient_flow` is a ``fit(..., monitor=...)`` function: at every recorded step
``t`` it reduces the step's :class:`gdjax.train.StepInfo` to a few numbers per parameter
leaf :math:`\ell` (a layer's ``W`` or ``b``), computed inside the compiled loop:

.. math::

    \|g_t^\ell\|_2, \qquad \|\theta_t^\ell\|_2, \qquad \|u_t^\ell\|_2, \qquad
    r_t^\ell = \frac{\|u_t^\ell\|_2}{\|\theta_t^\ell\|_2},

the gradient norm, the parameter norm, the update norm and the relative update (for
plain gradient descent :math:`r = \eta\|g\|/\|\theta\|`; a common rule of thumb wants it
near :math:`10^{-3}`). A vanishing gradient shows as :math:`\|g^\ell\|` falling towards
the input layers, an exploding one as it growing without bound.

:func:`nonfinite_origin` answers "where did the NaN come from?": it traces the loss with
:func:`gdjax.trace` at the given parameters and batch, walks the forward values in
evaluation order and reports the first non-finite one, and the first *named* one
(``gd.name`` in the model) at or after it; if every value is finite it walks the
adjoints from the output back.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gdjax._validate import UsageError

__all__ = ["NonFiniteOrigin", "gradient_flow", "leaf_names", "nonfinite_origin", "plot_flow"]


def _norms(tree: Any) -> jax.Array:
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.stack([jnp.sqrt(jnp.sum(jnp.square(jnp.asarray(x)))) for x in leaves])


def gradient_flow(info: Any) -> dict[str, jax.Array]:
    """Per-leaf norms of a step (a ``monitor`` for ``gd.fit``/``gd.sweep``).

    Args:
      info: a :class:`gdjax.train.StepInfo` (``params``, ``grads``, ``updates``, …).

    Returns:
      ``{"grad_norm", "param_norm", "update_norm", "update_ratio"}``, each of shape
      ``(n_leaves,)`` in the order of ``jax.tree_util.tree_leaves(params)``
      (:func:`leaf_names` gives their names). ``update_ratio`` is
      ``update_norm / param_norm`` (inf where a leaf is zero, e.g. a bias at the start).
    """
    g, p, u = _norms(info.grads), _norms(info.params), _norms(info.updates)
    return {"grad_norm": g, "param_norm": p, "update_norm": u, "update_ratio": u / p}


def _key_text(entry: Any) -> str:
    for attr in ("key", "idx", "name"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def leaf_names(params: Any) -> list[str]:
    """Short names of the leaves, in ``tree_leaves`` order: ``"w"``, ``"b"`` for a dict;
    ``"0.W"``, ``"0.b"``, ``"1.W"`` … for a list of layers (layer index from 0)."""
    paths = jax.tree_util.tree_flatten_with_path(params)[0]
    return [".".join(_key_text(e) for e in path) or "params" for path, _ in paths]


def plot_flow(
    steps: Any,
    flow: Mapping[str, Any],
    names: Sequence[str],
    path: str | Path,
    *,
    title: str,
    only: Callable[[str], bool] | None = None,
) -> Path:
    """Gradient norms and relative updates per leaf against the step, side by side.

    ``flow`` is ``FitResult.monitor`` of a :func:`gradient_flow` run (``(T, n_leaves)``
    arrays); ``only(name)`` picks the leaves drawn (e.g. the weight matrices).
    """
    from gdjax import plot

    steps = np.asarray(steps)
    pick = [i for i, n in enumerate(names) if only is None or only(n)]
    if not pick:
        raise UsageError(f"plot_flow: `only` kept none of the leaves; names are {list(names)}.")
    grad, ratio = np.asarray(flow["grad_norm"]), np.asarray(flow["update_ratio"])
    return plot.side_by_side(
        {
            "gradient norm ‖g‖ per leaf": {names[i]: (steps, grad[:, i]) for i in pick},
            "relative update ‖u‖/‖θ‖ per leaf": {names[i]: (steps, ratio[:, i]) for i in pick},
        },
        path,
        title=title,
        xlabel="step",
        ylabel=["‖∂L/∂θ‖ (log scale)", "‖Δθ‖/‖θ‖ (log scale)"],
        log=True,
    )


class NonFiniteOrigin(NamedTuple):
    """Where a non-finite value first appeared in ``loss_fn(params, batch)``.

    Attributes:
      stage: ``"input"`` (a parameter or the data itself), ``"forward"`` (a value) or
        ``"backward"`` (an adjoint, with every value finite).
      node: the first non-finite node in evaluation order (forward), or the first
        non-finite adjoint met going back from the output (backward).
      op: that node's operation (``"exp"``, ``"log"``, …).
      expr: its expression, e.g. ``"exp(z)"``.
      inputs: the nodes it reads (the values that were still finite).
      named: the first name given with ``gd.name`` (or the output) at or after ``node``
        whose value (or adjoint) is non-finite; None when none is.
      message: one sentence saying all this.
    """

    stage: str
    node: str
    op: str
    expr: str
    inputs: tuple[str, ...]
    named: str | None
    message: str


def _bad(x: Any) -> bool:
    arr = np.asarray(x)
    return arr.dtype.kind in "fc" and not bool(np.all(np.isfinite(arr)))


def nonfinite_origin(loss_fn: Callable, params: Any, batch: Any = None) -> NonFiniteOrigin | None:
    """Trace ``loss_fn(params, batch)`` and say where the first non-finite value appears.

    Use it on a diverged run's last finite parameters and its batch (``result.params``
    and the data, for a full-batch run). Returns None when every value and adjoint is
    finite.

    >>> origin = gd.diagnostics.nonfinite_origin(model.loss, result.params, data)
    >>> origin.message
    "the first non-finite value is exp1 = exp(z) (op exp) …"
    """
    from gdjax.graph import trace

    if not callable(loss_fn):
        raise UsageError(f"`loss_fn` must be a function loss_fn(params, batch), got {loss_fn!r}.")
    graph = trace(loss_fn, params, batch)
    named = set(graph.named) | set(graph.outputs)
    nodes = list(graph.nodes)
    first = next((i for i, n in enumerate(nodes) if _bad(n.value)), None)
    if first is not None:  # forward: evaluation order
        stage = "input" if nodes[first].op == "input" else "forward"
        later = [nodes[i] for i in range(first, len(nodes)) if _bad(nodes[i].value)]
    else:  # backward: the adjoints are computed from the output back
        back = [i for i in range(len(nodes) - 1, -1, -1) if _bad_adjoint(nodes[i])]
        if not back:
            return None
        stage, first = "backward", back[0]
        later = [nodes[i] for i in back]
    tagged = next((n.name for n in later if n.name in named), None)
    node = nodes[first]
    if stage == "input":
        msg = f"an input is already non-finite: {node.name}"
    else:
        what = "value" if stage == "forward" else "adjoint (going back from the output)"
        src = ", from " + ", ".join(_sized(graph[i]) for i in node.inputs) if node.inputs else ""
        msg = f"the first non-finite {what} is at {node.name} = {node.expr} (op {node.op}{src})"
        if stage == "backward":
            users = [graph[e.dst] for e in graph.consumers(node.name)]
            msg += ", pulled back through " + ", ".join(f"{u.name} = {u.expr}" for u in users)
    if tagged is not None and tagged != node.name:
        msg += f"; the first named intermediate that is non-finite is {tagged}"
    return NonFiniteOrigin(
        stage, node.name, node.op, node.expr, tuple(node.inputs), tagged, msg + "."
    )


def _sized(node: Any) -> str:
    """``"z (max |z| = 1e+20)"``: an input with the size of its (finite) value."""
    arr = np.asarray(node.value)
    if arr.dtype.kind not in "fc" or not arr.size or not np.all(np.isfinite(arr)):
        return node.name
    return f"{node.name} (max |{node.name}| = {float(np.max(np.abs(arr))):.3g})"


def _bad_adjoint(node: Any) -> bool:
    return node.adjoint is not None and _bad(node.adjoint)
