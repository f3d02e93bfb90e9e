r"""G1: the computation graph J(a, b, c) = 3(a + b·c) of seed 000.

Forward, left to right::

    u = b·c        v = a + u        J = 3v

Backward, right to left (each line reuses the one above it)::

    dJ/dv = 3
    dJ/du = dJ/dv · ∂v/∂u = dJ/dv           dJ/da = dJ/dv · ∂v/∂a = dJ/dv
    dJ/db = dJ/du · ∂u/∂b = c · dJ/du       dJ/dc = dJ/du · ∂u/∂c = b · dJ/du

The example point a = 5, b = 3, c = 2 (Ng, *Neural Networks and Deep Learning*,
"Derivatives with a Computation Graph") gives u = 6, v = 11, J = 33 and
dJ/da = 3, dJ/db = 6, dJ/dc = 9.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gdjax.models._base import Backprop, Model, check_layout
from gdjax.naming import name

_SPEC = {"a": (), "b": (), "c": ()}


def init(key: jax.Array, dtype: jnp.dtype = jnp.float32) -> dict[str, jax.Array]:
    """Draw a, b, c from a standard normal."""
    a, b, c = jax.random.normal(key, (3,), dtype)
    return {"a": a, "b": b, "c": c}


def loss(params: dict[str, jax.Array], batch: None = None) -> jax.Array:
    """J = 3(a + b·c). G1 has no data: ``batch`` is None."""
    check_layout("G1", params, _SPEC)
    a, b, c = params["a"], params["b"], params["c"]
    u = name(b * c, "u")
    v = name(a + u, "v")
    return 3 * v


def backprop(params: dict[str, jax.Array], batch: None = None) -> Backprop:
    """The right-to-left pass of seed 000, one line per edge of the graph."""
    check_layout("G1", params, _SPEC)
    a, b, c = params["a"], params["b"], params["c"]
    u = b * c
    v = a + u
    J = 3 * v
    dv = jnp.ones_like(v) * 3  # dJ/dv = 3
    du = dv  # ∂v/∂u = 1
    da = dv  # ∂v/∂a = 1
    db = c * du  # ∂u/∂b = c
    dc = b * du  # ∂u/∂c = b
    return Backprop(J, {"a": da, "b": db, "c": dc}, {"u": du, "v": dv})


def example() -> tuple[dict[str, jax.Array], None]:
    """a = 5, b = 3, c = 2: the course's worked example (J = 33)."""
    return {"a": jnp.float32(5.0), "b": jnp.float32(3.0), "c": jnp.float32(2.0)}, None


G1 = Model(
    id="G1",
    title="computation graph J = 3(a + b·c)",
    source="000_f64d53064821a188.txt",
    init=init,
    loss=loss,
    backprop=backprop,
    example=example,
    adjoint_names=("u", "v"),
    doc="docs/models/G1.md",
    loss_symbol="J",
)

MODELS = (G1,)
