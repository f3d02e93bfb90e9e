"""The numbers of a check: random points, autodiff, probes and central differences in
one vmapped float64 program, and the element-wise comparisons (in NumPy, afterwards)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from gdjax._validate import (
    check_same_structure,
)
from gdjax.check.report import MAX_LISTED, Row
from gdjax.check.subject import Subject, as_backprop, leaf_namer
from gdjax.naming import probing, recording

EPS = float(np.finfo(np.float64).eps)
_FD_STEP = EPS ** (1 / 3)  # the step that balances truncation (h²) and round-off (ε/h)
_FD_BUDGET = 4_000_000  # elements of perturbed inputs materialised per batch of points
_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}


def to_float64(tree: Any) -> Any:
    """Float leaves as float64, on the host (an eager cast would compile a program each)."""

    def cast(x: Any) -> np.ndarray:
        x = np.asarray(x)
        return x.astype(np.float64) if np.issubdtype(x.dtype, np.floating) else x

    return jax.tree_util.tree_map(cast, tree)


def leaf_roles(params: Any, batch: Any) -> tuple[str, ...]:
    """How :func:`sample_points` moves each leaf of ``(params, batch)``.

    ``"noise"`` for float leaves, ``"label"`` for float leaves of the batch holding only
    0s and 1s, ``"fixed"`` for integer and boolean leaves (counts, class indices).
    """
    roles = []
    for where, tree in (("params", params), ("batch", batch)):
        for x in jax.tree_util.tree_leaves(tree):
            x = np.asarray(x)
            if not np.issubdtype(x.dtype, np.floating):
                roles.append("fixed")
            elif where == "batch" and np.all((x == 0) | (x == 1)):
                roles.append("label")
            else:
                roles.append("noise")
    return tuple(roles)


def sample_points(seed: list[int], tree: Any, n: int, noise: float, roles: tuple[str, ...]) -> Any:
    """``n`` points: ``tree`` itself first, then random perturbations of it (host NumPy).

    A ``"noise"`` leaf ``x`` moves by Gaussian noise of standard deviation
    ``noise·max(rms(x), 0.1)``; a ``"label"`` leaf is redrawn as fair coin flips; a
    ``"fixed"`` leaf stays as it is. ``seed`` seeds the draw (same key, same points); the
    draw is made on the host, which costs no compilation, and the points enter the
    compiled check as data.
    """
    rng = np.random.default_rng(seed)
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    out = []
    for x, role in zip(leaves, roles):
        x = np.asarray(x)
        if role == "fixed":
            moved = np.broadcast_to(x, (n, *x.shape)).copy()
        elif role == "label":
            moved = rng.integers(0, 2, (n, *x.shape)).astype(x.dtype)
        else:
            sigma = noise * max(float(np.sqrt(np.mean(x * x))), 0.1)
            moved = x + sigma * rng.standard_normal((n, *x.shape))
        moved[0] = x
        out.append(moved)
    return jax.tree_util.tree_unflatten(treedef, out)


def _central_differences(
    fun: Callable[[jax.Array], jax.Array], v: jax.Array, scale: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Central differences of a scalar ``fun`` at ``v``, element by element, and their error.

    Returns ``(D_h, est)``: ``D_h[i] = (fun(v + h e_i) − fun(v − h e_i)) / 2h`` with
    ``h = ε^{1/3}·scale[i]`` (rounded so that ``v[i] + h`` is exact), and the estimate
    ``|D_h − D_2h| + 4ε(|fun(v + h e_i)| + |fun(v − h e_i)|)/h`` of its error. The ``4n``
    evaluations are one ``vmap`` of ``fun``.
    """
    n = v.size
    h = (v + _FD_STEP * scale) - v
    signs = jnp.asarray([1.0, -1.0, 2.0, -2.0], v.dtype)
    moves = signs[:, None, None] * jnp.diag(h)  # (4, n, n): ±h e_i and ±2h e_i
    up, down, up2, down2 = jax.vmap(fun)((v + moves).reshape(4 * n, n)).reshape(4, n)
    d1 = (up - down) / (2 * h)
    d2 = (up2 - down2) / (4 * h)
    return d1, jnp.abs(d1 - d2) + 4 * EPS * (jnp.abs(up) + jnp.abs(down)) / h


def named_values(loss: Callable, params: Any, batch: Any) -> dict[str, list[jax.Array]]:
    with recording() as store:
        loss(params, batch)
    return store


class Tol(NamedTuple):
    rtol: float
    atol: float
    fd_rtol: float


class Plan(NamedTuple):
    """What one check compares, found by tracing once (no FLOPs)."""

    layout: tuple[tuple[str, str, int], ...]  # (row name, kind, number of elements)
    leaves: tuple[str, ...]  # the gradient leaves' names, in row order
    probed: dict[str, tuple[int, ...]]  # adjoint name -> shape of its probe
    bad_rows: tuple[Row, ...]  # adjoints that cannot be compared, with why


def make_plan(subject: Subject, params: Any, batch: Any) -> Plan:
    """Trace the backprop and the loss once for shapes; decide which adjoints to probe."""
    hand = jax.eval_shape(lambda p, b: as_backprop(subject.backprop(p, b)), params, batch)
    if jnp.shape(hand.loss) != ():
        raise ValueError(
            f"{subject.id}: the backprop's loss has shape {jnp.shape(hand.loss)}; it must be a "
            f"scalar."
        )
    check_same_structure("the grads returned by backprop", hand.grads, params, "params")
    loss_shape = jax.eval_shape(subject.loss, params, batch)
    if jnp.shape(loss_shape) != ():
        raise ValueError(
            f"{subject.id}: loss(params, batch) has shape {jnp.shape(loss_shape)}; it must be "
            f"a scalar (sum or average over examples)."
        )
    named = jax.eval_shape(lambda p, b: named_values(subject.loss, p, b), params, batch)
    sym = subject.symbol
    probed: dict[str, tuple[int, ...]] = {}
    bad: list[Row] = []
    for label, adjoint in hand.adjoints.items():
        row = f"d{sym}/d{label}"
        found = named.get(label, [])
        if not found:
            bad.append(
                Row(
                    row,
                    "adjoint",
                    "UNPROBED",
                    note=f"the loss never tags an intermediate with gd.name(..., {label!r}), "
                    f"so autodiff cannot see it; tag it in the loss to check this adjoint",
                )
            )
        elif len(found) > 1:
            bad.append(
                Row(
                    row,
                    "adjoint",
                    "UNPROBED",
                    note=f"gd.name(..., {label!r}) is used {len(found)} times in the loss; "
                    f"give each intermediate its own name",
                )
            )
        elif jnp.shape(found[0]) != jnp.shape(adjoint):
            bad.append(
                Row(
                    row,
                    "adjoint",
                    "FAIL",
                    note=f"the hand-written adjoint has shape {jnp.shape(adjoint)} but the "
                    f"intermediate {label} has shape {jnp.shape(found[0])}",
                )
            )
        else:
            probed[label] = jnp.shape(found[0])
    for label in subject.declared_adjoints:
        if label not in hand.adjoints:
            bad.append(
                Row(
                    f"d{sym}/d{label}",
                    "adjoint",
                    "FAIL",
                    note=f"the model lists {label!r} in adjoint_names but its backprop "
                    f"returns no adjoint for it",
                )
            )
    to_named, order = leaf_namer(subject, params), []

    def named_grads(tree: Any) -> dict[str, jax.Array]:
        out = to_named(tree)
        order.extend(out)  # eval_shape hands dicts back sorted; keep the plugin's order
        return out

    grads = jax.eval_shape(named_grads, hand.grads)
    layout = [(sym, "loss", 1)] if subject.check_loss else []
    layout += [(f"d{sym}/d{k}", "grad", math.prod(jnp.shape(grads[k]))) for k in order]
    layout += [(f"d{sym}/d{k}", "adjoint", math.prod(shape)) for k, shape in probed.items()]
    return Plan(tuple(layout), tuple(order), probed, tuple(bad))


def _point_check(subject: Subject, plan: Plan, params: Any, batch: Any) -> dict[str, Any]:
    """Hand-written, autodiff and finite-difference values at one point, as flat vectors.

    Each vector lists the rows of ``plan.layout`` in order (the loss first, then every
    gradient leaf, then every probed adjoint), each row raveled.
    """
    hand = as_backprop(subject.backprop(params, batch))
    probes = {k: jnp.zeros(shape, jnp.float64) for k, shape in plan.probed.items()}

    def loss_of(theta: tuple[Any, Any]) -> jax.Array:
        p, pr = theta
        with probing(pr):
            return subject.loss(p, batch)

    theta = (params, probes)
    value, (g_ad, adj_ad) = jax.value_and_grad(loss_of)(theta)
    named = named_values(subject.loss, params, batch) if plan.probed else {}
    flat, unravel = ravel_pytree(theta)
    magnitude = (
        jax.tree_util.tree_map(jnp.abs, params),
        {k: jnp.abs(named[k][0]).astype(jnp.float64) for k in plan.probed},
    )
    fd_flat, est_flat = _central_differences(
        lambda v: loss_of(unravel(v)), flat, jnp.maximum(ravel_pytree(magnitude)[0], 1.0)
    )
    (g_fd, adj_fd), (g_est, adj_est) = unravel(fd_flat), unravel(est_flat)

    to_named = leaf_namer(subject, params)

    def row_vector(loss: Any, grads: Any, adjoints: Any) -> jax.Array:
        parts = [loss] if subject.check_loss else []
        named = to_named(grads)
        parts += [named[k] for k in plan.leaves]
        parts += [adjoints[k] for k in plan.probed]
        return jnp.concatenate([jnp.asarray(x, jnp.float64).ravel() for x in parts])

    nan = jnp.asarray(jnp.nan, jnp.float64)
    return {
        "hand": row_vector(hand.loss, hand.grads, hand.adjoints),
        "autodiff": row_vector(value, g_ad, adj_ad),
        "fd": row_vector(nan, g_fd, adj_fd),
        "fd_error": row_vector(nan, g_est, adj_est),
        "finite": jnp.isfinite(value) & jnp.all(jnp.isfinite(ravel_pytree(g_ad)[0])),
    }


def run_points(
    subject: Subject, plan: Plan, points: tuple[Any, Any], n: int
) -> dict[str, np.ndarray]:
    """Check the ``n`` stacked ``(params, batch)`` points in one compiled program.

    All points at once under ``vmap``, or in batches when the finite-difference inputs
    (``4·size²`` numbers per point) would be large. The comparisons happen afterwards, in
    NumPy: that keeps the compiled program, and its compile time, small.
    """
    size = sum(math.prod(s) for s in plan.probed.values())
    size += sum(math.prod(jnp.shape(x)[1:]) for x in jax.tree_util.tree_leaves(points[0]))
    most = max(1, _FD_BUDGET // max(4 * size * size, 1))
    # a divisor of n: lax.map then compiles one batched body, not a second one for the rest
    batch_size = max(d for d in range(1, min(n, most) + 1) if n % d == 0)

    def one(point: tuple[Any, Any]) -> dict[str, Any]:
        return _point_check(subject, plan, *point)

    def run_all(stacked: tuple[Any, Any]) -> dict[str, Any]:
        if batch_size >= n:
            return jax.vmap(one)(stacked)
        return jax.lax.map(one, stacked, batch_size=batch_size)

    # The program runs once: a quick compile beats a quick program. LLVM at -O0 halves the
    # time of `gdjax verify`; results agree with -O2 to float64 round-off.
    compiled = jax.jit(run_all).lower(points).compile(compiler_options=_COMPILER_OPTIONS)
    return {k: np.asarray(v) for k, v in jax.device_get(compiled(points)).items()}


def make_rows(
    plan: Plan, out: dict[str, np.ndarray], tol: Tol
) -> tuple[tuple[Row, ...], tuple[int, ...]]:
    """Compare the three sides row by row, over all points (in NumPy)."""
    with np.errstate(divide="ignore", invalid="ignore"):  # atol = 0 and a zero derivative
        return _compare_rows(plan, out, tol)


def _compare_rows(
    plan: Plan, out: dict[str, np.ndarray], tol: Tol
) -> tuple[tuple[Row, ...], tuple[int, ...]]:
    finite = out["finite"].astype(bool)
    skipped = tuple(int(i) for i in np.flatnonzero(~finite))
    rows = []
    start = 0
    for name, kind, size in plan.layout:
        cut = slice(start, start + size)
        start += size
        hand, auto = out["hand"][finite, cut], out["autodiff"][finite, cut]
        fd, est = out["fd"][finite, cut], out["fd_error"][finite, cut]
        diff = np.nan_to_num(np.abs(hand - auto), nan=np.inf)
        ad_fail = np.any(~(diff <= tol.atol + tol.rtol * np.abs(auto)), axis=1)
        stats = {
            "autodiff_abs": _max(diff),
            "autodiff_rel": _max(_ratio(diff, np.abs(auto) + tol.atol / tol.rtol)),
            "autodiff_fails": int(ad_fail.sum()),
        }
        fd_fail = np.zeros_like(ad_fail)
        if kind != "loss":
            fdiff = np.nan_to_num(np.abs(hand - fd), nan=np.inf)
            fd_fail = np.any(~(fdiff <= tol.atol + tol.fd_rtol * np.abs(fd) + est), axis=1)
            stats |= {
                "fd_abs": _max(fdiff),
                "fd_rel": _max(_ratio(fdiff, np.abs(fd) + tol.atol / tol.fd_rtol)),
                "fd_error": _max(est),
                "fd_fails": int(fd_fail.sum()),
            }
        index = np.flatnonzero(finite)  # row i of the arrays above is point index[i]
        failing = index[ad_fail | fd_fail]
        worst = None
        if diff.size:
            p, e = np.unravel_index(np.argmax(diff), diff.shape)
            worst = (int(index[p]), float(hand[p, e]), float(auto[p, e]))
        rows.append(
            Row(
                name,
                kind,
                "FAIL" if failing.size else "ok",
                failing_points=tuple(int(i) for i in failing[:MAX_LISTED]),
                worst=worst,
                **stats,
            )
        )
    return tuple(rows) + plan.bad_rows, skipped


def _ratio(diff: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``diff / scale``, with 0/0 = 0 (both sides exactly zero)."""
    return np.divide(diff, scale, out=np.zeros_like(diff), where=diff > 0)


def _max(x: np.ndarray) -> float:
    return float(np.max(x)) if x.size else 0.0
