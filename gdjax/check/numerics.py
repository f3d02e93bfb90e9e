r"""The numbers of a check, in one vmapped float64 program per call.

At every point: the hand-written values (inside the program, or precomputed on the host
for a NumPy backprop), autodiff's gradient and probe adjoints (one reverse pass), and
central differences of the loss :math:`\phi(s) = L(\theta + s\,d)` at
:math:`s = \pm t, \pm 2t, \pm t/16` with :math:`t = \varepsilon^{1/3}`:

* ``"elements"``: :math:`d = \max(|\theta_i|, 1)\, e_i` for every element (small models);
* ``"directions"``: per quantity, a few random Gaussian directions
  :math:`d = z \odot \max(|\theta|, 1)/\sqrt{n}` that move only that quantity, compared with
  :math:`g_\text{hand} \cdot d`. The cost does not grow with the number of elements.

:func:`element_evals` takes the same six steps along single elements at one point, for
the worst elements of a quantity that disagrees with autodiff (directions mode).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from gdjax.check.report import Row
from gdjax.check.subject import Subject, as_backprop, leaf_namer
from gdjax.naming import probing, recording

EPS = float(np.finfo(np.float64).eps)
FD_STEP = EPS ** (1 / 3)  # the step that balances truncation (t²) and round-off (ε/t)
STEPS = (1.0, -1.0, 2.0, -2.0, 1 / 16, -1 / 16)  # multiples of the step
_BUDGET = 4_000_000  # elements of perturbed inputs materialised per batch of points
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
    ``"fixed"`` leaf stays as it is. ``seed`` seeds the draw (same key, same points).
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
    shapes: tuple[tuple[int, ...], ...] = ()  # per layout row
    dtypes: tuple[str, ...] = ()  # the hand-written dtype per layout row
    order: tuple[str, ...] = ()  # the named intermediates, in forward order
    notes: tuple[str, ...] = ()
    host: bool = False  # the backprop runs outside jit (it uses NumPy)
    fd: str = "elements"  # or "directions"
    leaf_index: tuple[int, ...] = ()  # per gradient row: its index in tree_leaves(params)
    directions: int = 2


def loss_with_probes(subject: Subject, batch: Any) -> Callable[[Any], jax.Array]:
    """``theta = (params, probes) -> L``, each probe added to its named intermediate."""

    def loss_of(theta: tuple[Any, Any]) -> jax.Array:
        p, pr = theta
        with probing(pr):
            return subject.loss(p, batch)

    return loss_of


def row_vector(plan: Plan, to_named: Callable, loss: Any, grads: Any, adjoints: Any) -> Any:
    """The rows of ``plan.layout`` as one flat float64 vector (loss, grads, adjoints)."""
    parts = [loss] if plan.layout and plan.layout[0][1] == "loss" else []
    named = to_named(grads)
    parts += [named[k] for k in plan.leaves]
    parts += [adjoints[k] for k in plan.probed]
    return jnp.concatenate([jnp.asarray(x, jnp.float64).ravel() for x in parts])


def _element_evals(fun: Callable, v: jax.Array, scale: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``fun(v + s·h_i e_i)`` for every element ``i`` and step ``s`` in STEPS: ``(6, n)``."""
    n = v.size
    h = (v + FD_STEP * scale) - v  # rounded so that v + h is exact
    moves = jnp.asarray(STEPS, v.dtype)[:, None, None] * jnp.diag(h)
    return jax.vmap(fun)((v + moves).reshape(len(STEPS) * n, n)).reshape(len(STEPS), n), h


def _magnitudes(params: Any, named: dict, plan: Plan) -> tuple[Any, dict]:
    return (
        jax.tree_util.tree_map(lambda x: jnp.maximum(jnp.abs(x), 1.0), params),
        {k: jnp.maximum(jnp.abs(named[k][0]), 1.0).astype(jnp.float64) for k in plan.probed},
    )


def _point_check(
    subject: Subject, plan: Plan, params: Any, batch: Any, noise: Any, hand: Any,
    steps: tuple[float, ...] = STEPS[:4],
) -> dict[str, Any]:
    """Hand-written, autodiff and finite-difference values at one point.

    Along random directions only ``±t, ±2t`` are taken; a direction that disagrees is
    taken again with all six steps (:func:`recheck_directions`).
    """
    if hand is None:
        hand = as_backprop(subject.backprop(params, batch))
    probes = {k: jnp.zeros(shape, jnp.float64) for k, shape in plan.probed.items()}
    loss_of = loss_with_probes(subject, batch)
    theta = (params, probes)
    value, (g_ad, adj_ad) = jax.value_and_grad(loss_of)(theta)
    named = named_values(subject.loss, params, batch) if plan.probed else {}
    to_named = leaf_namer(subject, params)
    nan = jnp.asarray(jnp.nan, jnp.float64)
    out = {
        "hand": row_vector(plan, to_named, hand.loss, hand.grads, hand.adjoints),
        "autodiff": row_vector(plan, to_named, value, g_ad, adj_ad),
        "finite": jnp.isfinite(value) & jnp.all(jnp.isfinite(ravel_pytree(g_ad)[0])),
        "L0": value,
    }
    scales = _magnitudes(params, named, plan)
    if plan.fd == "elements":
        flat, unravel = ravel_pytree(theta)
        evals, h = _element_evals(lambda v: loss_of(unravel(v)), flat, ravel_pytree(scales)[0])
        rows = [row_vector(plan, to_named, nan, *unravel(e)) for e in evals]
        out["evals"] = jnp.stack(rows)  # (6, total)
        out["step"] = row_vector(plan, to_named, nan, *unravel(h))
        return out
    p_leaves, p_def = jax.tree_util.tree_flatten(params)
    s_leaves = jax.tree_util.tree_leaves(scales[0])
    h_leaves = jax.tree_util.tree_leaves(hand.grads)
    a_leaves = jax.tree_util.tree_leaves(g_ad)
    targets = [("grad", i, p_leaves[i], s_leaves[i], h_leaves[i], a_leaves[i])
               for i in plan.leaf_index]
    targets += [("probe", k, probes[k], scales[1][k], hand.adjoints[k], adj_ad[k])
                for k in plan.probed]
    steps = FD_STEP * jnp.asarray(steps, jnp.float64)
    k = plan.directions
    hd, ad, blocks = [], [], []
    for r, (_, _, base, scale, h_r, a_r) in enumerate(targets):
        dirs = noise[r] * scale / math.sqrt(max(math.prod(jnp.shape(base)), 1))
        blocks.append(dirs)
        h_r = jnp.asarray(h_r, jnp.float64)
        hd.append(jnp.sum(dirs * h_r, axis=tuple(range(1, dirs.ndim))))
        ad.append(jnp.abs(dirs * a_r).sum(axis=tuple(range(1, dirs.ndim))))

    def stacked_moves(j: int, shape: tuple[int, ...]) -> jax.Array:
        """Row j's directions in its block, zeros in the others: ``(rows·K, *shape)``."""
        return jnp.concatenate([
            blocks[r] if r == j else jnp.zeros((k, *shape), jnp.float64)
            for r in range(len(targets))
        ])

    row_of = {("grad", t[1]): r for r, t in enumerate(targets) if t[0] == "grad"}
    row_of |= {("probe", t[1]): r for r, t in enumerate(targets) if t[0] == "probe"}
    p_moves = [
        stacked_moves(row_of[("grad", i)], jnp.shape(x)) if ("grad", i) in row_of
        else jnp.zeros((len(targets) * k, *jnp.shape(x)), jnp.float64)
        for i, x in enumerate(p_leaves)
    ]
    pr_moves = {q: stacked_moves(row_of[("probe", q)], plan.probed[q]) for q in plan.probed}

    def along(p_move: list[jax.Array], pr_move: dict[str, jax.Array], s: jax.Array) -> Any:
        moved = jax.tree_util.tree_unflatten(p_def, [a + s * d for a, d in zip(p_leaves, p_move)])
        return loss_of((moved, {q: probes[q] + s * pr_move[q] for q in probes}))

    # one copy of the loss in the program, for every row and direction: a quick compile
    evals = jax.vmap(lambda pm, qm: jax.vmap(lambda s: along(pm, qm, s))(steps))(
        p_moves, pr_moves
    ).reshape(len(targets), k, steps.size)
    out["evals"] = evals  # (rows, K, steps)
    out["hd"] = jnp.stack(hd)  # (rows, K): hand-written · d
    out["scale"] = jnp.stack(ad)  # (rows, K): Σ|autodiff ⊙ d|, the scale of the tolerance
    return out


def direction_noise(plan: Plan, params: Any, n: int, seed: list[int]) -> list[np.ndarray]:
    """Standard normal draws for the random directions, per row: ``(n, K, *shape)``.

    Drawn on the host (NumPy): random numbers inside the compiled program would cost more
    compile time than the whole check of a 10⁶-parameter model.
    """
    if plan.fd != "directions":
        return []
    rng = np.random.default_rng([*seed, 1])
    leaves = jax.tree_util.tree_leaves(params)
    shapes = [np.shape(leaves[i])[1:] for i in plan.leaf_index] + list(plan.probed.values())
    return [rng.standard_normal((n, plan.directions, *s)) for s in shapes]


def run_points(
    subject: Subject, plan: Plan, points: tuple[Any, Any], n: int, seed: list[int],
    hand: Any = None,
) -> dict[str, np.ndarray]:
    """Check the ``n`` stacked ``(params, batch)`` points in one compiled program.

    All points at once under ``vmap``, or in batches (``lax.map``) when the perturbed
    inputs would be large. ``hand`` holds the hand-written values of every point when the
    backprop runs on the host (NumPy); otherwise they are computed in the program.
    """
    size = sum(math.prod(s) for s in plan.probed.values())
    size += sum(math.prod(jnp.shape(x)[1:]) for x in jax.tree_util.tree_leaves(points[0]))
    per_point = (
        len(STEPS) * size * size if plan.fd == "elements" else 4 * plan.directions * size
    )
    most = max(1, _BUDGET // max(per_point, 1))
    # a divisor of n: lax.map then compiles one batched body, not a second one for the rest
    batch_size = max(d for d in range(1, min(n, most) + 1) if n % d == 0)
    noise = direction_noise(plan, points[0], n, seed)

    def one(arg: tuple[Any, Any, Any, Any]) -> dict[str, Any]:
        (params, batch), z, h = arg
        return _point_check(subject, plan, params, batch, z, h)

    def run_all(arg: Any) -> dict[str, Any]:
        if batch_size >= n:
            return jax.vmap(one)(arg)
        return jax.lax.map(one, arg, batch_size=batch_size)

    arg = (points, noise, hand)
    # The program runs once: a quick compile beats a quick program (LLVM at -O0).
    compiled = jax.jit(run_all).lower(arg).compile(compiler_options=_COMPILER_OPTIONS)
    return {k: np.asarray(v) for k, v in jax.device_get(compiled(arg)).items()}


def direction_rechecker(subject: Subject, plan: Plan) -> Callable[..., np.ndarray]:
    """``recheck(point, noise, hand)``: all six steps along the random directions of one
    point, ``(rows, K, 6)``; one compiled program for every call."""

    def program(point: Any, noise: Any, hand: Any) -> jax.Array:
        return _point_check(subject, plan, *point, noise, hand, STEPS)["evals"]

    compiled = jax.jit(program)
    return lambda point, noise, hand: np.asarray(compiled(point, noise, hand))


def theta_offsets(plan: Plan, params: Any) -> list[int]:
    """Per layout row (after the loss row), its offset in ``ravel_pytree((params, probes))``."""
    sizes = [math.prod(np.shape(x)) for x in jax.tree_util.tree_leaves(params)]
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
    probe_sorted = sorted(plan.probed)
    probe_start, offset = {}, int(starts[-1])
    for k in probe_sorted:
        probe_start[k] = offset
        offset += math.prod(plan.probed[k])
    return [int(starts[i]) for i in plan.leaf_index] + [probe_start[k] for k in plan.probed]


def element_prober(
    subject: Subject, plan: Plan, cap: int
) -> Callable[[Any, Any, np.ndarray], tuple[np.ndarray, np.ndarray, float]]:
    """``probe(params, batch, flat_index)``: at one point, ``L(θ + s·h_i e_i)`` for up to
    ``cap`` flat elements of ``(params, probes)``, one compiled program for all calls.

    Returns ``(evals (E, 6), h (E,), L0)``; the elements run one after another
    (``lax.map``), so a 10⁶-element leaf is never copied more than a few times at once.
    """

    def program(params: Any, idx: jax.Array, batch: Any) -> tuple[jax.Array, ...]:
        probes = {k: jnp.zeros(shape, jnp.float64) for k, shape in plan.probed.items()}
        named = named_values(subject.loss, params, batch) if plan.probed else {}
        flat, unravel = ravel_pytree((params, probes))
        sflat = ravel_pytree(_magnitudes(params, named, plan))[0]
        loss_of = loss_with_probes(subject, batch)
        steps = jnp.asarray(STEPS, jnp.float64)

        def one(i: jax.Array) -> tuple[jax.Array, jax.Array]:
            h = (flat[i] + FD_STEP * sflat[i]) - flat[i]
            vals = jax.lax.map(lambda s: loss_of(unravel(flat.at[i].add(s * h))), steps)
            return vals, h

        most = max(1, _BUDGET // max(flat.size, 1))
        vals, h = jax.lax.map(one, idx, batch_size=min(most, idx.size))
        return vals, h, loss_of((params, probes))

    compiled = jax.jit(program)

    def probe(params: Any, batch: Any, flat_index: np.ndarray) -> Any:
        idx = np.full(cap, flat_index[0], np.int64)  # one shape: one compilation
        idx[: len(flat_index)] = flat_index[:cap]
        vals, h, l0 = compiled(params, idx, batch)
        e = min(len(flat_index), cap)
        return np.asarray(vals)[:e], np.asarray(h)[:e], float(l0)

    return probe
