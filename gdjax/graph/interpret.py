"""The interpreter: forward values and the reverse pass, one equation at a time; :func:`trace`.

:func:`trace` turns ``f`` into a jaxpr (with the name hook pushed), flattens it with
:class:`~gdjax.graph.build._Builder`, evaluates every step (:func:`_forward`), pulls the
seed back through each step's own VJP (:func:`_reverse`), and names the result
(:func:`~gdjax.graph.assemble._assemble`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gdjax import naming
from gdjax.graph.assemble import _assemble, _input_names
from gdjax.graph.build import _Builder, _edge_keys, _Lit, _Proto
from gdjax.graph.graph import Graph
from gdjax.graph.primitive import _mark

__all__ = ["trace"]


def _is_float(x: Any) -> bool:
    """True for a float or complex array, abstract value or literal."""
    dtype = x.dtype if hasattr(x, "dtype") else jnp.result_type(x)
    return jnp.issubdtype(dtype, jnp.inexact)


def _zero_cotangent(x: Any) -> Any:
    if _is_float(x):
        return jnp.zeros_like(x)
    return np.zeros(np.shape(x), dtype=jax.dtypes.float0)


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
    blocked = _blocked(b, out_ids)
    adjoints, edge_cts, partials = _reverse(b, out_ids, seeds, blocked)
    _note_blocked(b, blocked)
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


_NO_REVERSE = frozenset({"while"})  # primitives JAX cannot differentiate in reverse mode

_WHILE_NOTE = (
    "no adjoint flows back through it: JAX differentiates a while loop forward only (its "
    "number of steps is known only at run time), so its inputs' adjoints are not shown; "
    "lax.scan or lax.fori_loop with Python-int bounds can be differentiated"
)
_UPSTREAM_NOTE = (
    "no adjoint: the output depends on this value through a while loop, which JAX cannot "
    "differentiate in reverse mode"
)


def _no_reverse(step: Any) -> bool:
    """A while loop, or a scan/cond whose body holds one: JAX has no transpose for it."""
    if step.prim.name in _NO_REVERSE:
        return True
    if step.prim.name not in ("scan", "cond"):
        return False

    def holds_while(jaxpr: Any) -> bool:
        return any(
            e.primitive.name in _NO_REVERSE
            or any(holds_while(sub) for sub in jax.extend.core.jaxprs_in_params(e.params))
            for e in jaxpr.eqns
        )

    return any(holds_while(sub) for sub in jax.extend.core.jaxprs_in_params(step.params))


def _diff_inputs(b: _Builder, step: Any) -> list[int]:
    vals = [b.protos[a].value if isinstance(a, int) else a.val for a in step.atoms]
    return [i for i, a in enumerate(step.atoms) if isinstance(a, int) and _is_float(vals[i])]


def _blocked(b: _Builder, out_ids: list[int]) -> set[int]:
    """Nodes whose adjoint cannot be computed: the output depends on them through a step
    that has no reverse-mode rule (a ``while`` loop). Found structurally, last step first."""
    reached, blocked = set(out_ids), set()
    for step in reversed(b.steps):
        diff = _diff_inputs(b, step)
        live = [o for o in step.outs if o in reached]
        if not diff or not live:
            continue
        srcs = {step.atoms[i] for i in diff}
        reached |= srcs
        if _no_reverse(step) or any(o in blocked for o in live):
            blocked |= srcs
    return blocked


def _note_blocked(b: _Builder, blocked: set[int]) -> None:
    """Say on the loop and on every node upstream of it why it has no adjoint."""
    for step in b.steps:
        if _no_reverse(step) and any(isinstance(a, int) and a in blocked for a in step.atoms):
            why = (
                _WHILE_NOTE
                if step.prim.name in _NO_REVERSE
                else (f"its body holds a while loop, so {_WHILE_NOTE}")
            )
            for o in step.outs:
                p = b.protos[o]
                p.note = f"{p.note}; {why}" if p.note else why
    for i in blocked:
        p = b.protos[i]
        p.note = f"{p.note}; {_UPSTREAM_NOTE}" if p.note else _UPSTREAM_NOTE


def _reverse(b: _Builder, out_ids: list[int], seeds: list[Any], blocked: set[int] = frozenset()):
    """The reverse pass: each equation's own VJP, adjoints summed at fan-out.

    Runs as one compiled program. ``seeds[k]`` is the cotangent of output ``k`` (None:
    1 for the scalar output). Returns the adjoint of every node (None if not float, or
    in ``blocked``: upstream of a while loop), the cotangent along every edge in
    :func:`_edge_keys` order (None into a while loop or out of a blocked node), and
    ∂out/∂in per (step, input position) for scalar edges.
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
            if not diff or not live or _no_reverse(step):
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
            adj.get(i, jnp.zeros_like(v)) if _is_float(v) and i not in blocked else None
            for i, v in enumerate(values)
        ]
        edges = []
        for s, pos, k in _edge_keys(b):
            src_id = b.steps[s].atoms[pos]
            src = values[src_id]
            unknown = src_id in blocked or _no_reverse(b.steps[s])
            edges.append(
                edge_cts.get((s, pos, k), jnp.zeros_like(src))
                if _is_float(src) and not unknown
                else None
            )
        return adjoints, edges, partials

    return jax.jit(run)([p.value for p in b.protos], seeds)
