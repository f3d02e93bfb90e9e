"""The name mark: an identity primitive that survives jit, grad, vmap and scan.

:func:`gdjax.name` binds it (through :func:`_mark`, pushed as a naming hook) only while
:func:`gdjax.graph.trace` is tracing; it lowers to nothing in compiled code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

__all__ = ["name_p"]

name_p = Primitive("gdjax_name")
"""``gdjax_name[label=u] x = x``: marks the value the graph should call ``u``."""


def _name_impl(x: jax.Array, *, label: str) -> jax.Array:
    del label
    return x


def _name_jvp(primals: Sequence[Any], tangents: Sequence[Any], *, label: str):
    # The mark stays on the primal only; the tangent passes through untouched.
    return name_p.bind(primals[0], label=label), tangents[0]


def _name_transpose(ct: Any, x: Any, *, label: str) -> list[Any]:
    del x, label
    return [ct]


def _name_batch(args: Sequence[Any], dims: Sequence[Any], *, label: str):
    return name_p.bind(args[0], label=label), dims[0]


name_p.def_impl(_name_impl)
name_p.def_abstract_eval(lambda aval, *, label: aval)
ad.primitive_jvps[name_p] = _name_jvp
ad.primitive_transposes[name_p] = _name_transpose
batching.primitive_batchers[name_p] = _name_batch
mlir.register_lowering(name_p, mlir.lower_fun(_name_impl, multiple_results=False))


def _mark(x: Any, label: str) -> jax.Array:
    """The trace hook of :func:`gdjax.name`: bind the mark (identity) on ``x``."""
    return name_p.bind(jnp.asarray(x), label=label)
