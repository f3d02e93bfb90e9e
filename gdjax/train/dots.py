r"""Small matrix products as multiply-adds, for XLA's CPU backend.

XLA's CPU backend runs every ``dot_general`` as an operation of its own (a call into a
matrix-product kernel) and fuses the elementwise work around it into other operations;
each costs a few nanoseconds to launch, whatever its size. The documents' networks are
built of products like a 2×2 matrix by a 2-vector, so a step of N1 is mostly launches.
Written as a sum of :math:`c` elementwise products (:math:`c`, the contracted size),

.. math::
    (A B)_{ij} = \sum_{k < c} A_{ik} B_{kj},

such a product fuses with its neighbours: N1's step has 14 operations instead of 19 and
runs 5–10 % faster; a sweep's vmapped step (its products batched over the runs) 10–15 %.

:func:`small_dots` applies this to a function: it traces it to a jaxpr and evaluates
that jaxpr with every product of at most :data:`MAX_CONTRACTION` contracted and
:data:`MAX_OUTPUT` output elements (per run, as the function sees them) written out, and
every other operation bound as it was (the bodies of ``jit``-ed functions included; the
bodies of loops, conditionals and custom derivatives kept as they are).

The arithmetic is the same but for rounding: XLA's product kernel may fuse a multiply
and an add into one rounding where the elementwise sum rounds twice, so a product can
differ by an ulp or two, and a run from the plain program by what its dynamics make of
that (on a small tanh network: 4e-7 in the parameters after 100 Adam steps; a chaotic
Adam run may part further later). The engine does this on CPU only; for the arithmetic
of ``jax.value_and_grad`` exactly, set :data:`MAX_CONTRACTION` to 0 before the run
(it is part of the compiled program's key).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.extend import core as jex_core

__all__ = ["MAX_CONTRACTION", "MAX_OUTPUT", "limit", "small_dots"]

#: The most contracted elements of a product written as multiply-adds (0: none).
MAX_CONTRACTION = 4
MAX_OUTPUT = 4096  # and its output's elements at most

_CALLS = ("pjit", "jit", "closed_call")  # primitives whose body is inlined and rewritten


def limit() -> int:
    """The contraction limit a program compiled now uses: :data:`MAX_CONTRACTION` on
    CPU, 0 (no rewrite) elsewhere."""
    return MAX_CONTRACTION if jax.default_backend() == "cpu" else 0


def small_dots(fn: Callable[..., Any], max_contraction: int) -> Callable[..., Any]:
    """``fn(*args)`` with its products of at most ``max_contraction`` contracted elements
    written as multiply-adds (``fn`` itself when 0)."""
    if max_contraction <= 0:
        return fn

    @functools.wraps(fn)
    def rewritten(*args):
        closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*args)
        if not any(_rewrites(e, max_contraction) for e in closed.jaxpr.eqns):
            return fn(*args)  # nothing to write out: the plain program
        leaves = jax.tree_util.tree_leaves(args)
        flat = _evaluate(closed.jaxpr, closed.consts, leaves, max_contraction)
        return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(out_shape), flat)

    return rewritten


def _rewrites(eqn: Any, max_contraction: int) -> bool:
    """Whether the jaxpr equation ``eqn`` is a product to write out (or holds one)."""
    if eqn.primitive.name in _CALLS:
        return any(_rewrites(e, max_contraction) for e in eqn.params["jaxpr"].jaxpr.eqns)
    if eqn.primitive.name != "dot_general" or eqn.params.get("out_sharding") is not None:
        return False
    lhs, rhs = (v.aval for v in eqn.invars)
    (contract, _), _ = eqn.params["dimension_numbers"]
    out = eqn.outvars[0].aval
    floats = all(jnp.issubdtype(a.dtype, jnp.floating) for a in (lhs, rhs, out))
    c = math.prod(lhs.shape[d] for d in contract)
    return floats and 0 < c <= max_contraction and 0 < math.prod(out.shape) <= MAX_OUTPUT


def _evaluate(jaxpr: Any, consts: list[Any], args: list[Any], max_contraction: int) -> list[Any]:
    env: dict[Any, Any] = {}

    def read(v):
        return v.val if isinstance(v, jex_core.Literal) else env[v]

    env.update(zip(jaxpr.constvars, consts, strict=True))
    env.update(zip(jaxpr.invars, args, strict=True))
    for eqn in jaxpr.eqns:
        ins = [read(v) for v in eqn.invars]
        if eqn.primitive.name in _CALLS and _rewrites(eqn, max_contraction):
            body = eqn.params["jaxpr"]
            outs = _evaluate(body.jaxpr, body.consts, ins, max_contraction)
        elif eqn.primitive.name == "dot_general" and _rewrites(eqn, max_contraction):
            outs = [_multiply_adds(*ins, eqn.params, eqn.outvars[0].aval.dtype)]
        else:
            outs = eqn.primitive.bind(*ins, **eqn.primitive.get_bind_params(eqn.params))
            outs = outs if eqn.primitive.multiple_results else [outs]
        env.update(zip(eqn.outvars, outs, strict=True))
    return [read(v) for v in jaxpr.outvars]


def _multiply_adds(lhs: jax.Array, rhs: jax.Array, params: dict, dtype: Any) -> jax.Array:
    """``dot_general(lhs, rhs)`` as a sum over the contracted index of elementwise
    products: output dims (batch, lhs free, rhs free), as ``dot_general`` orders them."""
    (lc, rc), (lb, rb) = params["dimension_numbers"]
    lf = [d for d in range(lhs.ndim) if d not in lc and d not in lb]
    rf = [d for d in range(rhs.ndim) if d not in rc and d not in rb]
    a = jnp.transpose(lhs, (*lb, *lf, *lc)).astype(dtype)
    b = jnp.transpose(rhs, (*rb, *rf, *rc)).astype(dtype)
    batch, a_free, b_free = (
        a.shape[: len(lb)],
        a.shape[len(lb) : len(lb) + len(lf)],
        b.shape[len(rb) : len(rb) + len(rf)],
    )
    a = a.reshape(*batch, *a_free, *(1,) * len(b_free), -1)
    b = b.reshape(*batch, *(1,) * len(a_free), *b_free, -1)
    out = a[..., 0] * b[..., 0]
    for k in range(1, a.shape[-1]):
        out = out + a[..., k] * b[..., k]
    return out
