r"""S1: the scalar function of seed 003, f(x) = √(x² + exp(x²)) + cos(x² + exp(x²)).

Forward, through the intermediate variables the textbook uses::

    a = x²      b = exp(a)      c = a + b      d = √c      e = cos(c)      f = d + e

Backward, right to left. ``c`` feeds both ``d`` and ``e``, and ``a`` feeds both ``b``
and ``c``: where a value feeds two places, the two arriving gradients add::

    df/dd = 1                      df/de = 1
    df/dc = df/dd · 1/(2√c) + df/de · (−sin c)
    df/db = df/dc · 1
    df/da = df/dc · 1 + df/db · exp(a)
    df/dx = df/da · 2x

which multiplies out to the closed form (:func:`derivative`)::

    df/dx = 2x(1 + exp(x²)) · (1/(2√(x² + exp(x²))) − sin(x² + exp(x²)))

The text prints ``√(x + exp(x²))`` in the first denominator, a typo
(:func:`printed_derivative`). At ``x = 0`` and ``x = 1``, where ``x² = x``, the typo gives
the right number, so a check at those points alone cannot catch it; at ``x = 0.5`` it
gives −1.4275 instead of −1.3604, 5% off.

S1 has parameters ``{"x": ()}`` and no data: ``batch`` is ignored (pass ``None``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gdjax.models._base import Backprop, Model, check_layout
from gdjax.naming import name

__all__ = ["MODELS", "S1", "derivative", "function", "printed_derivative"]

Params = dict[str, jax.Array]

_SPEC = {"x": ()}


def function(x: jax.Array) -> jax.Array:
    """f(x) = √(x² + exp(x²)) + cos(x² + exp(x²)), elementwise."""
    c = x * x + jnp.exp(x * x)
    return jnp.sqrt(c) + jnp.cos(c)


def derivative(x: jax.Array) -> jax.Array:
    """The correct df/dx = 2x(1 + exp(x²))·(1/(2√(x² + exp(x²))) − sin(x² + exp(x²)))."""
    b = jnp.exp(x * x)
    c = x * x + b
    return 2 * x * (1 + b) * (1 / (2 * jnp.sqrt(c)) - jnp.sin(c))


def printed_derivative(x: jax.Array) -> jax.Array:
    """df/dx as seed 003 prints it, with √(x + exp(x²)) in the first denominator (a typo).

    (2x + 2x·exp(x²)) / (2√(x + exp(x²))) − sin(x² + exp(x²))·(2x + exp(x²)·2x).
    """
    b = jnp.exp(x * x)
    return (2 * x + 2 * x * b) / (2 * jnp.sqrt(x + b)) - jnp.sin(x * x + b) * (2 * x + b * 2 * x)


def init(key: jax.Array, dtype: jnp.dtype = jnp.float32) -> Params:
    """x ~ N(0, 1)."""
    return {"x": jax.random.normal(key, (), dtype)}


def loss(params: Params, batch: None = None) -> jax.Array:
    """f(x), through the named intermediates a…e."""
    check_layout("S1", params, _SPEC)
    x = params["x"]
    a = name(x * x, "a")
    b = name(jnp.exp(a), "b")
    c = name(a + b, "c")
    d = name(jnp.sqrt(c), "d")
    e = name(jnp.cos(c), "e")
    return d + e


def backprop(params: Params, batch: None = None) -> Backprop:
    """The textbook's chain rule, one line per edge of the graph, right to left."""
    check_layout("S1", params, _SPEC)
    x = params["x"]
    a = x * x
    b = jnp.exp(a)
    c = a + b
    d = jnp.sqrt(c)
    e = jnp.cos(c)
    f = d + e
    dd = jnp.ones_like(f)  # ∂f/∂d = 1
    de = jnp.ones_like(f)  # ∂f/∂e = 1
    dc = dd / (2 * d) + de * -jnp.sin(c)  # ∂d/∂c = 1/(2√c), ∂e/∂c = −sin c; both add
    db = dc  # ∂c/∂b = 1
    da = dc + db * b  # ∂c/∂a = 1, ∂b/∂a = exp(a) = b; both add
    dx = da * 2 * x  # ∂a/∂x = 2x
    return Backprop(f, {"x": dx}, {"a": da, "b": db, "c": dc, "d": dd, "e": de})


def example() -> tuple[Params, None]:
    """x = 0.5 (the text evaluates at no point; at 0.5 the printed typo shows)."""
    return {"x": jnp.float32(0.5)}, None


S1 = Model(
    id="S1",
    title="f(x) = √(x² + exp(x²)) + cos(x² + exp(x²))",
    source="003_357c1e21ab39f119.txt",
    init=init,
    loss=loss,
    backprop=backprop,
    example=example,
    adjoint_names=("a", "b", "c", "d", "e"),
    doc="docs/models/S1.md",
    loss_symbol="f",
    extras={
        "function": function,
        "derivative": derivative,
        "printed_derivative": printed_derivative,
    },
)

MODELS = (S1,)
