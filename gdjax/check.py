r"""Check a hand-written derivation against autodiff and finite differences.

``check_backprop(model)`` takes a model's hand-written backward pass (or your own
``(loss_fn, backprop_fn)`` pair) and compares, in float64, at the given point and at many
random points around it:

* every gradient leaf ``dL/dθ`` with ``jax.grad`` of the loss;
* every named adjoint ``dL/du`` with autodiff's adjoint of the intermediate ``u``, obtained
  by adding a zero *probe* ``p`` to ``u`` in the forward pass (``gd.name(u, "u")`` does it,
  see :mod:`gdjax.naming`) and differentiating with respect to the probe:
  :math:`\partial L(u + p)/\partial p |_{p=0} = \partial L/\partial u`;
* both with central finite differences,

  .. math:: D_h = \frac{L(\theta + h e_i) - L(\theta - h e_i)}{2h},
            \qquad h = \varepsilon^{1/3} \max(|\theta_i|, 1),

  whose own error is estimated from a second step, :math:`|D_h - D_{2h}|` (the
  :math:`O(h^2)` truncation error, Richardson's way), plus the round-off
  :math:`4\varepsilon (|L(\theta + h e_i)| + |L(\theta - h e_i)|)/h`.

An element passes when

.. math:: |g_\text{hand} - g_\text{autodiff}| \le \text{atol} + \text{rtol}\,|g_\text{autodiff}|
          \quad\text{and}\quad
          |g_\text{hand} - D_h| \le \text{atol} + \text{fd\_rtol}\,|D_h| + \text{est}(D_h).

The reported relative error is :math:`|g_\text{hand} - g_\text{ad}| /
(|g_\text{ad}| + \text{atol}/\text{rtol})`, so a row passes against autodiff exactly when
its relative error is at most ``rtol``.

The random points perturb every float leaf of params and batch by Gaussian noise scaled to
the leaf's size (0/1 labels are redrawn, integer leaves kept), seeded by ``key``. All points
run in one compiled program: ``vmap`` over the points, and over the elements for the finite
differences; the comparisons are done afterwards in NumPy.

``check_derivative(f, df)`` does the same for a formula ``df`` of a scalar function ``f``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from gdjax._validate import (
    as_key,
    check_finite,
    check_int,
    check_positive,
    check_same_structure,
)
from gdjax.models._base import Backprop, Model
from gdjax.naming import probing, recording

__all__ = [
    "ModelCheck",
    "Report",
    "Row",
    "check_backprop",
    "check_derivative",
    "verify_models",
]

_EPS = float(np.finfo(np.float64).eps)
_FD_STEP = _EPS ** (1 / 3)  # the step that balances truncation (h²) and round-off (ε/h)
_MAX_LISTED = 20  # failing points kept per row
_FD_BUDGET = 4_000_000  # elements of perturbed inputs materialised per batch of points
_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}


# --------------------------------------------------------------------------- the report


class Row(NamedTuple):
    """One checked quantity: a loss value, a gradient leaf, an adjoint or a derivative.

    Attributes:
      name: the quantity in the document's words, e.g. ``"dL/dw2"`` or ``"dJ/du"``.
      kind: ``"loss"``, ``"grad"``, ``"adjoint"`` or ``"derivative"``.
      status: ``"ok"``, ``"FAIL"`` or ``"UNPROBED"`` (an adjoint autodiff cannot reach:
        not a pass).
      autodiff_abs: max over points and elements of ``|hand-written − autodiff|``.
      autodiff_rel: max of ``|hand-written − autodiff| / (|autodiff| + atol/rtol)``.
      autodiff_fails: number of points where the two disagree.
      fd_abs, fd_rel: the same against central finite differences (NaN for a loss row).
      fd_error: the largest estimated error of the finite differences themselves.
      fd_fails: number of points where hand-written and finite differences disagree.
      failing_points: indices (into the report's points) where the row fails, at most 20.
      worst: ``(point, hand-written, autodiff)`` at the largest disagreement, or None.
      note: why a row could not be checked, or what is wrong with it.
    """

    name: str
    kind: str
    status: str
    autodiff_abs: float = math.nan
    autodiff_rel: float = math.nan
    autodiff_fails: int = 0
    fd_abs: float = math.nan
    fd_rel: float = math.nan
    fd_error: float = math.nan
    fd_fails: int = 0
    failing_points: tuple[int, ...] = ()
    worst: tuple[int, float, float] | None = None
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class Report(NamedTuple):
    """The result of a check: a value, with a readable :meth:`table` and :meth:`to_dict`.

    Attributes:
      subject: the model id (``"G1"``), ``"your (loss_fn, backprop_fn)"`` or ``"df/dx"``.
      title: a one-line description.
      rows: one :class:`Row` per checked quantity.
      points: how many points were checked (point 0 is the given one).
      skipped: points left out because the loss or its autodiff gradient is not finite there.
      xs: for :func:`check_derivative`, the x of each point; empty otherwise.
      rtol, atol: the tolerance against autodiff; fd_rtol: the extra one for finite
        differences (added to their estimated error).
    """

    subject: str
    title: str
    rows: tuple[Row, ...]
    points: int
    skipped: tuple[int, ...] = ()
    xs: tuple[float, ...] = ()
    rtol: float = 1e-7
    atol: float = 1e-12
    fd_rtol: float = 1e-6

    @property
    def ok(self) -> bool:
        """True when every row passed (an unprobed adjoint is not a pass)."""
        return all(row.ok for row in self.rows)

    @property
    def failures(self) -> tuple[str, ...]:
        """Names of the rows that did not pass, e.g. ``("dL/dw2",)``."""
        return tuple(row.name for row in self.rows if not row.ok)

    def _where(self, point: int) -> str:
        return f"x = {_num(self.xs[point])}" if self.xs else f"point {point}"

    def _explain(self, row: Row) -> str:
        if row.status == "UNPROBED":
            return f"UNPROBED {row.name}: not checked: {row.note}"
        usable = self.points - len(self.skipped)
        parts = []
        if row.note:
            parts.append(row.note)
        if row.autodiff_fails:
            parts.append(
                f"hand-written differs from autodiff by {_num(row.autodiff_abs)} "
                f"at {row.autodiff_fails}/{usable} points"
            )
        if row.fd_fails:
            parts.append(
                f"hand-written differs from finite differences by {_num(row.fd_abs)} "
                f"(their own error ≤ {_num(row.fd_error)}) at {row.fd_fails}/{usable} points"
            )
        text = f"FAIL {row.name}: " + "; ".join(parts)
        if self.xs and row.failing_points:
            shown = ", ".join(_num(self.xs[i]) for i in row.failing_points[:8])
            more = ", ..." if len(row.failing_points) > 8 else ""
            text += f"; wrong at x = {shown}{more}"
        if row.worst is not None and row.autodiff_fails:
            point, hand, auto = row.worst
            text += (
                f" (worst at {self._where(point)}: hand-written {hand:.10g}, autodiff {auto:.10g})"
            )
        return text

    def table(self) -> str:
        """A fixed-width table; failing rows are marked and explained below it."""
        usable = self.points - len(self.skipped)
        where = "at the given x" if self.xs else "(point 0 is the given one, the rest random)"
        lines = [
            f"{self.subject}: {self.title}",
            f"{self.points} points in float64 {where}. Hand-written = "
            f"{'your formula' if self.xs else 'the backprop written out by hand'}; "
            f"autodiff = jax.grad{'' if self.xs else ' (adjoints via zero probes)'}; "
            f"finite diff = central differences.",
            f"Tolerances: vs autodiff rtol {self.rtol:g}, atol {self.atol:g}; "
            f"vs finite diff rtol {self.fd_rtol:g} + their estimated error.",
        ]
        if self.skipped:
            lines.append(
                f"{len(self.skipped)} point(s) skipped: the loss or its autodiff gradient is "
                f"not finite there."
            )
        width = max([len(r.name) for r in self.rows] + [8])
        head = f"{'':9}{'quantity':<{width}}  {'kind':<10}"
        lines.append(
            f"{'':9}{'':<{width}}  {'':<10}{'hand-written vs autodiff':<28}"
            f"{'hand-written vs finite diff':<36}"
        )
        lines.append(
            head + f"{'max abs':>9}{'max rel':>9}{'fails':>10}"
            f"{'max abs':>9}{'max rel':>9}{'fd err':>9}{'fails':>9}"
        )
        for r in self.rows:
            mark = {"ok": "ok", "FAIL": "FAIL", "UNPROBED": "UNPROBED"}[r.status]
            if r.status == "UNPROBED":
                cells = f"{'not probed: see below':<28}"
            else:
                fd = (
                    f"{_num(r.fd_abs):>9}{_num(r.fd_rel):>9}{_num(r.fd_error):>9}"
                    f"{f'{r.fd_fails}/{usable}':>9}"
                    if not math.isnan(r.fd_abs)
                    else f"{'-':>9}{'-':>9}{'-':>9}{'-':>9}"
                )
                cells = (
                    f"{_num(r.autodiff_abs):>9}{_num(r.autodiff_rel):>9}"
                    f"{f'{r.autodiff_fails}/{usable}':>10}" + fd
                )
            lines.append(f"{mark:<9}{r.name:<{width}}  {r.kind:<10}" + cells)
        bad = [r for r in self.rows if not r.ok]
        lines += [self._explain(r) for r in bad]
        if bad:
            lines.append(f"FAILED: {', '.join(r.name for r in bad)}")
        else:
            lines.append(f"ok: every quantity agrees at all {usable} points")
        return "\n".join(line.rstrip() for line in lines)

    def __str__(self) -> str:
        return self.table()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (non-finite numbers become the strings "nan"/"inf")."""
        rows = []
        for r in self.rows:
            d = {k: _jsonable(v) for k, v in r._asdict().items()}
            d["ok"] = r.ok
            d["worst"] = (
                None
                if r.worst is None
                else dict(zip(("point", "hand_written", "autodiff"), map(_jsonable, r.worst)))
            )
            rows.append(d)
        return {
            "subject": self.subject,
            "title": self.title,
            "ok": self.ok,
            "failures": list(self.failures),
            "points": self.points,
            "skipped": list(self.skipped),
            "xs": [_jsonable(x) for x in self.xs],
            "rtol": self.rtol,
            "atol": self.atol,
            "fd_rtol": self.fd_rtol,
            "rows": rows,
        }


def _num(v: float) -> str:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return f"{v:.2g}" if abs(v) >= 1e-2 or v == 0 else f"{v:.1e}"


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, tuple):
        return [_jsonable(x) for x in v]
    return v


# --------------------------------------------------------------------------- the subject


class _Subject(NamedTuple):
    """What is checked, whatever the user passed."""

    id: str
    title: str
    loss: Callable[[Any, Any], jax.Array]
    backprop: Callable[[Any, Any], Backprop]
    symbol: str  # the loss's letter in the document: "L", "J", "f"
    leaf_names: Any  # None, a to_named(tree) callable, or a sequence of names
    declared_adjoints: tuple[str, ...]
    check_loss: bool


def _as_backprop(out: Any) -> Backprop:
    """Accept a Backprop, ``(loss, grads)`` or ``(loss, grads, adjoints)``."""
    if isinstance(out, Backprop):
        return out
    if isinstance(out, tuple) and len(out) in (2, 3):
        loss, grads, *adj = out
        adjoints = adj[0] if adj else {}
        if not isinstance(adjoints, Mapping):
            raise TypeError(
                "the backprop function's adjoints must be a dict {name: dL/dname}, got "
                f"{type(adjoints).__name__}."
            )
        return Backprop(loss, grads, dict(adjoints))
    raise TypeError(
        "the backprop function must return a gd.Backprop(loss, grads, adjoints), or a tuple "
        f"(loss, grads) or (loss, grads, adjoints); got {type(out).__name__}."
    )


def _resolve(model_or_functions: Any, params: Any, batch: Any) -> tuple[_Subject, Any, Any]:
    """The subject, params and batch of a check, validated."""
    if isinstance(model_or_functions, str):
        from gdjax import models

        model_or_functions = models.get(model_or_functions)
    if isinstance(model_or_functions, Model):
        model = model_or_functions
        ex_params, ex_batch = model.example()
        if params is None:
            params = ex_params
        elif batch is None:  # the example batch: the shapes must be the example's too
            check_same_structure("params", params, ex_params, f"{model.id}'s example params")
        else:
            check_same_structure(
                "params", _shapeless(params), _shapeless(ex_params), f"{model.id}'s params"
            )
        if batch is None:
            batch = ex_batch
        else:
            check_same_structure(
                "batch", _shapeless(batch), _shapeless(ex_batch), f"{model.id}'s example batch"
            )
        extras = model.extras or {}
        subject = _Subject(
            id=model.id,
            title=model.title,
            loss=model.loss,
            backprop=model.backprop,
            symbol=str(extras.get("loss_symbol", "L")),
            leaf_names=extras.get("leaf_names"),
            declared_adjoints=tuple(model.adjoint_names),
            check_loss=True,
        )
        return subject, params, batch
    if (
        isinstance(model_or_functions, (tuple, list))
        and len(model_or_functions) == 2
        and all(callable(f) for f in model_or_functions)
    ):
        if params is None:
            raise TypeError(
                "check_backprop((loss_fn, backprop_fn), params, batch): pass `params`, the "
                "point to check at (a pytree of float arrays)."
            )
        loss_fn, backprop_fn = model_or_functions
        subject = _Subject(
            id="your (loss_fn, backprop_fn)",
            title=f"hand-written {_fn_name(backprop_fn)} vs autodiff of {_fn_name(loss_fn)}",
            loss=loss_fn,
            backprop=backprop_fn,
            symbol="L",
            leaf_names=None,
            declared_adjoints=(),
            check_loss=True,
        )
        return subject, params, batch
    raise TypeError(
        "`model_or_functions` must be a registry id such as 'G1', a gd.Model, or a pair "
        f"(loss_fn, backprop_fn) of callables; got {type(model_or_functions).__name__}."
    )


def _shapeless(tree: Any) -> Any:
    """``tree`` with every leaf replaced by 0: compares structure, not shapes."""
    return jax.tree_util.tree_map(lambda _: 0, tree)


def _fn_name(fn: Callable) -> str:
    return getattr(fn, "__name__", type(fn).__name__)


def _describe(fn: Callable | str) -> str:
    return repr(fn) if isinstance(fn, str) else _fn_name(fn)


def _validate_point(params: Any, batch: Any) -> None:
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        where = "params" + jax.tree_util.keystr(path)
        if not hasattr(leaf, "dtype") and not isinstance(leaf, (int, float)):
            raise TypeError(f"`{where}` must be an array, got {type(leaf).__name__}.")
        if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            raise TypeError(
                f"`{where}` has dtype {jnp.result_type(leaf)}; every leaf of `params` is "
                f"differentiated, so it must hold floats (e.g. jnp.asarray(v, jnp.float32))."
            )
    for path, leaf in jax.tree_util.tree_flatten_with_path(batch)[0]:
        if not hasattr(leaf, "dtype") and not isinstance(leaf, (bool, int, float)):
            raise TypeError(
                f"`batch{jax.tree_util.keystr(path)}` must be an array or a number, "
                f"got {type(leaf).__name__}."
            )
    check_finite("params", params)
    check_finite("batch", batch)


def _as_seed(key: Any) -> list[int]:
    """The seed of the host draw of random points: the bits of the key (or int seed)."""
    return np.asarray(jax.random.key_data(as_key(key))).ravel().tolist()


def _check_points(points: Any) -> int:
    return check_int("points", points, what="an int (how many points to check)")


# --------------------------------------------------------------------------- numerics


def _to_float64(tree: Any) -> Any:
    """Float leaves as float64, on the host (an eager cast would compile a program each)."""

    def cast(x: Any) -> np.ndarray:
        x = np.asarray(x)
        return x.astype(np.float64) if np.issubdtype(x.dtype, np.floating) else x

    return jax.tree_util.tree_map(cast, tree)


def _roles(params: Any, batch: Any) -> tuple[str, ...]:
    """How :func:`_sample` moves each leaf of ``(params, batch)``.

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


def _sample(seed: list[int], tree: Any, n: int, noise: float, roles: tuple[str, ...]) -> Any:
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
    return d1, jnp.abs(d1 - d2) + 4 * _EPS * (jnp.abs(up) + jnp.abs(down)) / h


def _named_values(loss: Callable, params: Any, batch: Any) -> dict[str, list[jax.Array]]:
    with recording() as store:
        loss(params, batch)
    return store


class _Tol(NamedTuple):
    rtol: float
    atol: float
    fd_rtol: float


class _Plan(NamedTuple):
    """What one check compares, found by tracing once (no FLOPs)."""

    layout: tuple[tuple[str, str, int], ...]  # (row name, kind, number of elements)
    leaves: tuple[str, ...]  # the gradient leaves' names, in row order
    probed: dict[str, tuple[int, ...]]  # adjoint name -> shape of its probe
    bad_rows: tuple[Row, ...]  # adjoints that cannot be compared, with why


def _leaf_names(subject: _Subject, params: Any) -> Callable[[Any], dict[str, jax.Array]]:
    """A function from a params-shaped tree to ``{leaf name: array}``."""
    names = subject.leaf_names
    if callable(names):
        return lambda tree: dict(names(tree))
    leaves_with_path = jax.tree_util.tree_flatten_with_path(params)[0]
    if names is None:
        top = "layers" if isinstance(params, (list, tuple)) else "params"
        names = [_path_name(path, top) for path, _ in leaves_with_path]
    names = [str(n) for n in names]
    if len(names) != len(leaves_with_path) or len(set(names)) != len(names):
        raise ValueError(
            f"{subject.id}: extras['leaf_names'] must give one distinct name per params leaf "
            f"({len(leaves_with_path)} leaves), got {names!r}."
        )
    return lambda tree: dict(zip(names, jax.tree_util.tree_leaves(tree)))


def _path_name(path: tuple, top: str) -> str:
    """``('W1',)`` -> ``"W1"``; ``(1, 'W')`` -> ``"layers[1].W"``."""
    text = ""
    for entry in path:
        if isinstance(entry, jax.tree_util.DictKey):
            text += f".{entry.key}"
        elif isinstance(entry, jax.tree_util.SequenceKey):
            text += f"[{entry.idx}]"
        elif isinstance(entry, jax.tree_util.GetAttrKey):
            text += f".{entry.name}"
        else:
            text += str(entry)
    if not text:
        return top
    return top + text if text.startswith("[") else text.lstrip(".")


def _plan(subject: _Subject, params: Any, batch: Any) -> _Plan:
    """Trace the backprop and the loss once for shapes; decide which adjoints to probe."""
    hand = jax.eval_shape(lambda p, b: _as_backprop(subject.backprop(p, b)), params, batch)
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
    named = jax.eval_shape(lambda p, b: _named_values(subject.loss, p, b), params, batch)
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
    to_named, order = _leaf_names(subject, params), []

    def named_grads(tree: Any) -> dict[str, jax.Array]:
        out = to_named(tree)
        order.extend(out)  # eval_shape hands dicts back sorted; keep the plugin's order
        return out

    grads = jax.eval_shape(named_grads, hand.grads)
    layout = [(sym, "loss", 1)] if subject.check_loss else []
    layout += [(f"d{sym}/d{k}", "grad", math.prod(jnp.shape(grads[k]))) for k in order]
    layout += [(f"d{sym}/d{k}", "adjoint", math.prod(shape)) for k, shape in probed.items()]
    return _Plan(tuple(layout), tuple(order), probed, tuple(bad))


def _point_check(subject: _Subject, plan: _Plan, params: Any, batch: Any) -> dict[str, Any]:
    """Hand-written, autodiff and finite-difference values at one point, as flat vectors.

    Each vector lists the rows of ``plan.layout`` in order (the loss first, then every
    gradient leaf, then every probed adjoint), each row raveled.
    """
    hand = _as_backprop(subject.backprop(params, batch))
    probes = {k: jnp.zeros(shape, jnp.float64) for k, shape in plan.probed.items()}

    def loss_of(theta: tuple[Any, Any]) -> jax.Array:
        p, pr = theta
        with probing(pr):
            return subject.loss(p, batch)

    theta = (params, probes)
    value, (g_ad, adj_ad) = jax.value_and_grad(loss_of)(theta)
    named = _named_values(subject.loss, params, batch) if plan.probed else {}
    flat, unravel = ravel_pytree(theta)
    magnitude = (
        jax.tree_util.tree_map(jnp.abs, params),
        {k: jnp.abs(named[k][0]).astype(jnp.float64) for k in plan.probed},
    )
    fd_flat, est_flat = _central_differences(
        lambda v: loss_of(unravel(v)), flat, jnp.maximum(ravel_pytree(magnitude)[0], 1.0)
    )
    (g_fd, adj_fd), (g_est, adj_est) = unravel(fd_flat), unravel(est_flat)

    to_named = _leaf_names(subject, params)

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


def _run(subject: _Subject, plan: _Plan, points: tuple[Any, Any], n: int) -> dict[str, np.ndarray]:
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


def _rows(
    plan: _Plan, out: dict[str, np.ndarray], tol: _Tol
) -> tuple[tuple[Row, ...], tuple[int, ...]]:
    """Compare the three sides row by row, over all points (in NumPy)."""
    with np.errstate(divide="ignore", invalid="ignore"):  # atol = 0 and a zero derivative
        return _compare_rows(plan, out, tol)


def _compare_rows(
    plan: _Plan, out: dict[str, np.ndarray], tol: _Tol
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
                failing_points=tuple(int(i) for i in failing[:_MAX_LISTED]),
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


# --------------------------------------------------------------------------- public API


def check_backprop(
    model_or_functions: Model | str | tuple[Callable, Callable],
    params: Any = None,
    batch: Any = None,
    *,
    points: int = 100,
    key: jax.Array | int = 0,
    rtol: float = 1e-7,
    atol: float = 1e-12,
    fd_rtol: float = 1e-6,
    noise: float = 0.5,
) -> Report:
    r"""Compare a hand-written backprop with autodiff and finite differences, in float64.

    Args:
      model_or_functions: a registry id (``"G1"``), a :class:`gd.Model`, or your own pair
        ``(loss_fn, backprop_fn)`` with ``loss_fn(params, batch) -> scalar`` and
        ``backprop_fn(params, batch) -> gd.Backprop(loss, grads, adjoints)`` (or a tuple
        ``(loss, grads)`` / ``(loss, grads, adjoints)``). Adjoints are checked for the
        intermediates your loss tags with ``gd.name(x, label)``.
      params: the point to check at; default the model's ``example()`` params.
      batch: the data; default the model's example batch (None for data-free models).
      points: how many points: the given one plus ``points − 1`` random ones, each float
        leaf of params and batch moved by Gaussian noise (``noise``·its RMS); 0/1 labels
        redrawn; integer leaves kept.
      key: a ``jax.random`` key (or an int seed) that seeds the random points; default 0.
      rtol, atol: tolerance against autodiff: ``|hand − ad| ≤ atol + rtol·|ad|``.
      fd_rtol: tolerance against central differences, added to their estimated error.
      noise: the relative size of the random perturbations.

    Returns:
      A :class:`Report`: ``.ok``, ``.failures``, ``.rows``, ``.table()``, ``.to_dict()``.

    Raises:
      ValueError: unknown model id; params/batch not matching the model; NaN or inf in
        params or batch; a loss or gradient that is not finite at the given point.
      TypeError: arguments of the wrong type.
    """
    points = _check_points(points)
    seed = _as_seed(key)
    check_positive("rtol", rtol)
    check_positive("atol", atol, allow_zero=True)
    check_positive("fd_rtol", fd_rtol)
    check_positive("noise", noise, allow_zero=True)
    subject, params, batch = _resolve(model_or_functions, params, batch)
    _validate_point(params, batch)
    tol = _Tol(float(rtol), float(atol), float(fd_rtol))
    with jax.enable_x64(True):
        params64, batch64 = _to_float64(params), _to_float64(batch)
        plan = _plan(subject, params64, batch64)
        stacked = _sample(seed, (params64, batch64), points, noise, _roles(params64, batch64))
        out = _run(subject, plan, stacked, points)
    rows, skipped = _rows(plan, out, tol)
    if 0 in skipped:
        raise ValueError(
            f"{subject.id}: the loss or its autodiff gradient is not finite at the given point "
            f"(params/batch); check there is nothing to divide by zero or log of zero there."
        )
    return Report(subject.id, subject.title, rows, points, skipped, (), *tol)


def check_derivative(
    f: Callable[[jax.Array], jax.Array] | str,
    df: Callable[[jax.Array], jax.Array] | str,
    points: Sequence[float] | jax.Array | None = None,
    *,
    rtol: float = 1e-7,
    atol: float = 1e-12,
    fd_rtol: float = 1e-6,
    var: str = "x",
) -> Report:
    r"""Check a formula ``df`` for the derivative of a scalar function ``f``, in float64.

    ``df(x)`` is compared with ``jax.grad(f)(x)`` and with central differences of ``f`` at
    each point; the report says at which x it is wrong.

    Args:
      f: a JAX-traceable scalar function of one scalar (or a formula string, see
        :func:`gdjax._expr.parse`).
      df: your derivative of ``f`` (callable or formula string).
      points: the x values; default 21 points evenly spaced on [-2, 2].
      rtol, atol, fd_rtol: tolerances, as in :func:`check_backprop`.
      var: the variable's name in formula strings and in the report (``"df/dx"``).

    Returns:
      A :class:`Report` with one row, ``df/dx``.

    Raises:
      ValueError: no points, non-finite points, ``f`` not finite at any point, or a
        function that does not map a scalar to a scalar.
      TypeError: ``f``/``df`` neither callables nor strings.
    """
    from gdjax._expr import parse

    title = f"{_describe(df)} as the derivative of {_describe(f)}"
    f = parse(f, var) if isinstance(f, str) else f
    df = parse(df, var) if isinstance(df, str) else df
    for arg, fn in (("f", f), ("df", df)):
        if not callable(fn):
            raise TypeError(f"`{arg}` must be a function of one scalar, got {type(fn).__name__}.")
    check_positive("rtol", rtol)
    check_positive("atol", atol, allow_zero=True)
    check_positive("fd_rtol", fd_rtol)
    xs = np.linspace(-2.0, 2.0, 21) if points is None else _as_points(points)
    tol = _Tol(float(rtol), float(atol), float(fd_rtol))
    with jax.enable_x64(True):
        x0 = jnp.float64(xs[0])
        for arg, fn in (("f", f), ("df", df)):
            shape = jnp.shape(jax.eval_shape(fn, x0))
            if shape != ():
                raise ValueError(
                    f"`{arg}` must map a scalar to a scalar, but {arg}(x) has shape {shape}."
                )
        subject = _Subject(
            id=f"df/d{var}",
            title=title,
            loss=lambda p, b: f(p),
            backprop=lambda p, b: Backprop(f(p), df(p), {}),
            symbol="f",
            leaf_names=(var,),
            declared_adjoints=(),
            check_loss=False,
        )
        plan = _Plan(((f"df/d{var}", "derivative", 1),), (var,), {}, ())
        out = _run(subject, plan, (xs, None), len(xs))
    rows, skipped = _rows(plan, out, tol)
    if len(skipped) == len(xs):
        raise ValueError(
            "`f` or its derivative is not finite at any of the points; pass `points` inside "
            "its domain (e.g. x > 0 for log or sqrt)."
        )
    return Report(f"df/d{var}", subject.title, rows, len(xs), skipped, tuple(map(float, xs)), *tol)


def _as_points(points: Any) -> np.ndarray:
    try:
        xs = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"`points` must be a list of numbers, got {points!r}.") from None
    xs = xs.reshape(-1) if xs.ndim == 0 else xs
    if xs.ndim != 1 or xs.size == 0:
        raise ValueError(f"`points` must be a non-empty 1-D list of numbers, got shape {xs.shape}.")
    if not np.all(np.isfinite(xs)):
        raise ValueError("`points` holds NaN or inf; pass finite x values.")
    return xs


class ModelCheck(NamedTuple):
    """One registry model's check by :func:`verify_models`."""

    model: Model
    report: Report | None  # None when the check itself raised
    error: str  # "" unless the check raised: "TypeError: ..."
    seconds: float

    @property
    def ok(self) -> bool:
        return self.report is not None and self.report.ok


def verify_models(
    ids: Sequence[str] | None = None, *, points: int = 100, key: Any = 0
) -> Iterator[ModelCheck]:
    """:func:`check_backprop` on each registry model (default: all), one at a time.

    The arguments are checked before the first model runs, so a bad one is an error of
    the call, never a failed model. Model ``i`` draws its points from ``fold_in(key, i)``.
    A model whose check raises is yielded as failed with the error, and the others still run.
    """
    from gdjax import models

    points = _check_points(points)
    base = as_key(key)
    chosen = [models.get(m) for m in ids] if ids else list(models.REGISTRY.values())
    for i, model in enumerate(chosen):
        t0 = time.perf_counter()
        try:
            report = check_backprop(model, points=points, key=jax.random.fold_in(base, i))
            error = ""
        except Exception as err:  # a broken model is a failure of that model, not of the call
            report, error = None, f"{type(err).__name__}: {err}"
        yield ModelCheck(model, report, error, time.perf_counter() - t0)
