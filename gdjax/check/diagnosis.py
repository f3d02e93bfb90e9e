r"""Where a derivation went wrong, and why: ``Report.first_wrong``, ``Row.inherits``,
``Row.cause``.

**Inheritance.** A backward pass computes each adjoint from the ones above it. If the
hand-written adjoint of an intermediate :math:`w` is off by :math:`\delta_w`, every quantity
:math:`r` computed from it is off by exactly the pull-back of :math:`\delta_w`:

.. math:: \frac{\partial}{\partial r} \langle \delta_w, w \rangle ,

which one reverse pass of :math:`L + \langle\delta_w, w\rangle` gives. A wrong row whose error
equals that pull-back (within 1e-6) only *inherits* the error of :math:`w`; one whose error
does not has an error of its own. Rows are visited in the order of the backward pass (the
named intermediates in reverse order of the forward pass, then the leaves); the first one
with an error of its own is ``first_wrong``.

**Cause.** ``hand = r·autodiff`` everywhere: ``"sign"`` (r = −1), ``"factor m = m: sum
instead of mean?"`` (r = m examples), ``"factor 2"``; ``hand = autodiffᵀ``: ``"transpose"``;
``hand = autodiff − (one consumer's contribution)`` in the traced graph: ``"missing
branch"``; within float32 round-off with float32 values: ``"precision"``; else ``"other"``.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gdjax.check.numerics import Plan, row_vector
from gdjax.check.report import Row
from gdjax.check.subject import Subject, leaf_namer
from gdjax.naming import hooked

_CLOSE = 1e-6


def _close(x: np.ndarray, y: np.ndarray) -> bool:
    scale = max(float(np.max(np.abs(y), initial=0.0)), 1e-300)
    return bool(np.allclose(x, y, rtol=_CLOSE, atol=1e-9 * scale))


def _fmt(r: float) -> str:
    return f"{float(f'{r:.4g}'):g}"


def factor_words(r: float, m: int | None) -> str:
    """The words for ``hand = r · right``."""
    if math.isclose(r, -1.0, rel_tol=1e-6):
        return "sign"
    if r < 0:
        return f"sign and factor {_fmt(-r)}"
    if m and m > 1 and math.isclose(r, m, rel_tol=1e-6):
        return f"factor {m} = m: sum instead of mean?"
    if m and m > 1 and math.isclose(r, 1 / m, rel_tol=1e-6):
        return f"factor {_fmt(r)} = 1/m: mean instead of sum?"
    return f"factor {_fmt(r)}"


def cause_of(hand: np.ndarray, auto: np.ndarray, shape: tuple, dtype: str,
             m: int | None) -> str | None:
    """Why ``hand`` (points × elements) differs from ``auto``; None when no rule fits."""
    h, a = hand.ravel(), auto.ravel()
    scale = float(np.max(np.abs(a), initial=0.0))
    big = np.abs(a) > 1e-3 * scale
    if scale > 0 and big.any():
        r = float(np.median(h[big] / a[big]))
        if r != 0 and not math.isclose(r, 1.0, rel_tol=1e-9) and _close(h, r * a):
            return factor_words(r, m)
    if len(shape) == 2 and shape[0] == shape[1] > 1:
        ht = np.swapaxes(hand.reshape(-1, *shape), 1, 2).reshape(hand.shape)
        if _close(ht, auto):
            return "transpose"
    rel = np.abs(h - a) / (np.abs(a) + 1e-300)
    low = dtype not in ("float64", "complex128")
    single = np.all(h.astype(np.float32).astype(np.float64) == h)
    if np.all(rel <= 1e-3) and (low or (single and not np.all(a.astype(np.float32) == a))):
        return "precision"
    return None


def batch_size(batch: Any) -> int | None:
    """``m``, the common leading size of the batch's arrays (None without one)."""
    sizes = {np.shape(x)[0] for x in jax.tree_util.tree_leaves(batch) if np.ndim(x) >= 1}
    return sizes.pop() if len(sizes) == 1 else None


def _values_and_probes(subject: Subject, probes: dict, params: Any, batch: Any) -> dict:
    store: dict[str, Any] = {}

    def hook(x: Any, label: str) -> Any:
        if label in probes:
            x = x + probes[label]
        store.setdefault(label, x)
        return x

    with hooked(hook):
        subject.loss(params, batch)
    return store


def _label(plan: Plan, r: int) -> str:
    """The leaf or intermediate of layout row ``r``."""
    has_loss = plan.layout[0][1] == "loss"
    k = r - has_loss
    return plan.leaves[k] if k < len(plan.leaves) else list(plan.probed)[k - len(plan.leaves)]


def _pullback(subject: Subject, plan: Plan, params: Any, batch: Any, delta: dict) -> np.ndarray:
    """The row vector of ∂⟨δ_w, w⟩/∂(params, probes): what an error δ_w in dL/dw causes."""
    to_named = leaf_namer(subject, params)

    def inner(theta: Any, batch: Any, delta: dict) -> jax.Array:
        p, pr = theta
        store = _values_and_probes(subject, pr, p, batch)
        return sum(jnp.vdot(delta[k], store[k]) for k in delta)

    probes = {k: jnp.zeros(s, jnp.float64) for k, s in plan.probed.items()}
    g_p, g_pr = jax.jit(jax.grad(inner))((params, probes), batch, delta)
    return np.asarray(row_vector(plan, to_named, jnp.float64(0.0), g_p, g_pr))


def _backward_order(plan: Plan, rows: list[Row]) -> list[int]:
    """Failing rows in the order of the backward pass: adjoints last-computed first."""
    forward = {n: i for i, n in enumerate(plan.order)}

    def key(i: int) -> tuple[int, int]:
        r = rows[i]
        if r.kind == "adjoint":
            return (0, -forward.get(r.name.split("/d", 1)[-1], -1))
        return (1, i)

    return sorted((i for i, r in enumerate(rows) if r.status == "FAIL" and r.kind != "loss"),
                  key=key)


def diagnose(
    subject: Subject, plan: Plan, rows: tuple[Row, ...], out: dict[str, np.ndarray],
    point: tuple[Any, Any], p: int,
) -> tuple[tuple[Row, ...], str | None]:
    """Rows with their causes and inheritance at point ``p``; and ``first_wrong``."""
    rows = list(rows)
    cuts, start = {}, 0
    for r, (_, _, size) in enumerate(plan.layout):
        cuts[r] = slice(start, start + size)
        start += size
    params, batch = point
    m = batch_size(batch)
    hand, auto = out["hand"][p], out["autodiff"][p]
    finite = out["finite"].astype(bool)
    for r in cuts:
        row = rows[r]
        if row.ok or row.cause or not row.autodiff_fails:
            continue
        pts = np.array([i for i in row.failing_points if finite[i]] or [p])
        cause = cause_of(out["hand"][pts, cuts[r]], out["autodiff"][pts, cuts[r]],
                         plan.shapes[r], plan.dtypes[r], m)
        rows[r] = row._replace(cause=cause)
    roots: list[int] = []
    effects: dict[int, np.ndarray] = {}
    first = None
    for r in _backward_order(plan, rows):
        row = rows[r]
        if r in cuts and row.autodiff_fails and roots:
            err = hand[cuts[r]] - auto[cuts[r]]
            total = sum(effects[w][cuts[r]] for w in roots)
            if _close(err, total):
                blame = max(roots, key=lambda w: float(np.max(np.abs(effects[w][cuts[r]]))))
                rows[r] = row._replace(inherits=rows[blame].name)
                continue
        first = first or row.name
        if row.kind == "adjoint" and r in cuts:
            label = _label(plan, r)
            shape = plan.probed[label]
            delta = {label: (hand[cuts[r]] - auto[cuts[r]]).reshape(shape)}
            effects[r] = _pullback(subject, plan, params, batch, delta)
            roots.append(r)
    for r in cuts:
        row = rows[r]
        if not row.ok and row.cause is None and row.inherits is None and row.autodiff_fails:
            branch = missing_branch(subject, plan, row, r, params, batch,
                                    hand[cuts[r]], auto[cuts[r]])
            rows[r] = row._replace(cause=branch or "other")
        elif not row.ok and row.cause is None and row.inherits is None:
            rows[r] = row._replace(
                cause="other",
                note=row.note or "autodiff agrees with the hand-written value but finite "
                "differences do not: is a custom derivative rule (custom_jvp/vjp) wrong?",
            )
    if first is None:  # only the loss value (or an unorderable row) is wrong
        first = next((r.name for r in rows if r.status == "FAIL"), None)
    return tuple(rows), first


def missing_branch(subject: Subject, plan: Plan, row: Row, r: int, params: Any, batch: Any,
                   hand: np.ndarray, auto: np.ndarray) -> str | None:
    """``"missing branch: ..."`` when ``hand`` lacks exactly one consumer's contribution."""
    from gdjax.graph import trace

    if row.kind == "adjoint":
        node = _label(plan, r)
    elif callable(subject.leaf_names) or row.kind != "grad":
        return None
    else:
        k = plan.leaves.index(_label(plan, r))
        path = jax.tree_util.tree_flatten_with_path(params)[0][plan.leaf_index[k]][0]
        node = "p" + jax.tree_util.keystr(path)
    try:
        graph = trace(lambda p: subject.loss(p, batch), params)
        edges = [e for e in graph.consumers(node) if e.cotangent is not None]
    except Exception:  # a graph that cannot be traced: no diagnosis, not an error
        return None
    parts = [np.asarray(e.cotangent, np.float64).ravel() for e in edges]
    for e, c in zip(edges, parts):
        if len(parts) > 1 and _close(hand, auto - c):
            return f"missing branch: the contribution through {_node(graph, e.dst)} is missing"
    if len(edges) == 1 and hand.size == 1:
        dst = graph[edges[0].dst]
        if dst.op == "broadcast_in_dim" and dst.adjoint is not None:
            flat = np.asarray(dst.adjoint, np.float64).ravel()
            for i, c in enumerate(flat):
                if flat.size > 1 and _close(hand, auto - c):
                    return (f"missing branch: the contribution through {dst.name}[{i}] "
                            f"is missing")
    return None


def _node(graph: Any, name: str) -> str:
    node = graph[name]
    return f"{name} = {node.expr}" if node.expr and node.expr != name else name
