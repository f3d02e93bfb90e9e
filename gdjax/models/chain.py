r"""C1 and C2: the chain rule through a chain of functions, and through a fan-out (seed 004).

C1 — a chain of three parameterised functions, fitted to ``N`` points ``(xₙ, yₙ)``::

    fₙ = f(xₙ, a)        gₙ = g(fₙ, b) = fₙ² + b·fₙ        hₙ = h(gₙ, c) = ŷₙ
    Loss = Σₙ (ŷₙ − yₙ)²

``g`` is fixed by the question; ``f`` and ``h`` are yours, given with their partial
derivatives (:func:`make_c1`). Backward, per point, right to left, then summed over n::

    ∂Loss/∂hₙ = 2(hₙ − yₙ)
    ∂Loss/∂gₙ = ∂Loss/∂hₙ · ∂h/∂g(gₙ, c)
    ∂Loss/∂fₙ = ∂Loss/∂gₙ · ∂g/∂f = ∂Loss/∂gₙ · (2fₙ + b)
    ∂Loss/∂a = Σₙ ∂Loss/∂fₙ · ∂f/∂a(xₙ, a)
    ∂Loss/∂b = Σₙ ∂Loss/∂gₙ · ∂g/∂b = Σₙ ∂Loss/∂gₙ · fₙ
    ∂Loss/∂c = Σₙ ∂Loss/∂hₙ · ∂h/∂c(gₙ, c)

which are the question's three products ∂Loss/∂h·∂h/∂g·∂g/∂f·∂f/∂a, … . The adjoints
``"f"``, ``"g"``, ``"h"`` (each ``(N,)``) are ∂Loss/∂fₙ, ∂Loss/∂gₙ, ∂Loss/∂hₙ. The
default chain is a tanh unit, the fixed quadratic, and a linear read-out::

    f(x, a) = tanh(a·x)     ∂f/∂a = x·(1 − tanh²(a·x))
    h(g, c) = c·g           ∂h/∂g = c,   ∂h/∂c = g

C2 — fan-out through a multiply gate. ``f(a, b) = a·b`` feeds ``K`` consumers
``uₖ = vₖ·f``, and ``Loss = Σₖ uₖ``. Each consumer sends back the gradient
``∂Loss/∂uₖ · ∂uₖ/∂f = vₖ``; where one value feeds several places, its gradient is the sum
of all that arrive::

    ∂Loss/∂fₖ = vₖ                   (the gradients that arrive, one per consumer)
    ∂Loss/∂f  = Σₖ ∂Loss/∂fₖ
    ∂Loss/∂a  = b · ∂Loss/∂f         ∂Loss/∂b = a · ∂Loss/∂f        ∂Loss/∂vₖ = f

In code the fan-out is explicit: ``f_k = broadcast(f, (K,))`` is the copy of ``f`` each
consumer reads, so the adjoint ``"f_k"`` holds the arriving gradients and ``"f"`` their
sum. The example reproduces the answer's numbers: −0.2, 0.4 and 0.6 arrive, 0.8 in all.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from gdjax._validate import UsageError
from gdjax.losses import squared_error
from gdjax.models._base import Backprop, Model, check_layout, unpack_xy
from gdjax.naming import name

__all__ = ["C1", "C2", "MODELS", "make_c1"]

Params = dict[str, jax.Array]
Batch = tuple[jax.Array, jax.Array]
Fn = Callable[[jax.Array, jax.Array], jax.Array]

_SOURCE = "004_616421b6fb8d6c26.txt"


# --------------------------------------------------------------------------- C1

_C1 = {"a": (), "b": (), "c": ()}


def _tanh_unit(x: jax.Array, a: jax.Array) -> jax.Array:
    return jnp.tanh(a * x)


def _tanh_unit_da(x: jax.Array, a: jax.Array) -> jax.Array:
    t = jnp.tanh(a * x)
    return x * (1 - t * t)


def _readout(g: jax.Array, c: jax.Array) -> jax.Array:
    return c * g


def _readout_dg(g: jax.Array, c: jax.Array) -> jax.Array:
    return jnp.broadcast_to(c, jnp.shape(g))


def _readout_dc(g: jax.Array, c: jax.Array) -> jax.Array:
    return g


def _quadratic(f: jax.Array, b: jax.Array) -> jax.Array:
    """g(y, b) = y² + b·y, the function the question fixes."""
    return f * f + b * f


def make_c1(
    f: Fn = _tanh_unit,
    df_da: Fn = _tanh_unit_da,
    h: Fn = _readout,
    dh_dg: Fn = _readout_dg,
    dh_dc: Fn = _readout_dc,
    *,
    title: str | None = None,
) -> Model:
    """C1 with your own ``f(x, a)`` and ``h(g, c)`` and their partial derivatives.

    Every function is elementwise JAX code called with an array of shape ``(N,)`` and a
    scalar parameter. ``backprop`` uses your partial derivatives; ``loss`` uses only
    ``f`` and ``h``, so ``gd.check_backprop(make_c1(...))`` tells you whether the partial
    derivatives you worked out are right. ``∂f/∂x`` is not needed: ``x`` is data.

    Args:
      f: ``f(x, a)``; default ``tanh(a·x)``.
      df_da: ``∂f/∂a (x, a)``; default ``x·(1 − tanh²(a·x))``.
      h: ``h(g, c)``; default ``c·g``.
      dh_dg: ``∂h/∂g (g, c)``; default ``c``.
      dh_dc: ``∂h/∂c (g, c)``; default ``g``.
      title: a one-line description for reports.

    Returns:
      A :class:`~gdjax.models.Model` with id ``"C1"``, params ``{"a", "b", "c"}`` (scalars)
      and batch ``(x, y)`` of shapes ``(N,)``.
    """
    fns = {"f": f, "df_da": df_da, "h": h, "dh_dg": dh_dg, "dh_dc": dh_dc}
    for arg, fn in fns.items():
        if not callable(fn):
            raise UsageError(
                f"make_c1: `{arg}` must be a function, got {type(fn).__name__}. Pass e.g. "
                f"{arg}=lambda x, a: jnp.tanh(a * x)."
            )

    def data(params: Params, batch: Batch) -> Batch:
        x, y = unpack_xy("C1", batch, ("x", "y"))
        check_layout("C1", params, _C1, {"x": x, "y": y}, {"x": ("N",), "y": ("N",)})
        return x, y

    def init(key: jax.Array, dtype: jnp.dtype = jnp.float32) -> Params:
        """a, b, c ~ N(0, 1)."""
        a, b, c = jax.random.normal(key, (3,), dtype)
        return {"a": a, "b": b, "c": c}

    def predict(params: Params, x: jax.Array) -> jax.Array:
        """ŷ = h(g(f(x, a), b), c), elementwise."""
        p = params
        return h(_quadratic(f(jnp.asarray(x), p["a"]), p["b"]), p["c"])

    def loss(params: Params, batch: Batch) -> jax.Array:
        """Loss = Σₙ (h(g(f(xₙ, a), b), c) − yₙ)²."""
        x, y = data(params, batch)
        fv = name(f(x, params["a"]), "f")
        gv = name(_quadratic(fv, params["b"]), "g")
        hv = name(h(gv, params["c"]), "h")
        return squared_error(hv, y)

    def backprop(params: Params, batch: Batch) -> Backprop:
        """The question's three chain-rule products, per point, summed over n."""
        x, y = data(params, batch)
        a, b, c = params["a"], params["b"], params["c"]
        fv = f(x, a)
        gv = _quadratic(fv, b)
        hv = h(gv, c)
        L = squared_error(hv, y)
        dh = 2 * (hv - y)  # ∂Loss/∂hₙ
        dg = dh * dh_dg(gv, c)  # · ∂h/∂g
        df = dg * (2 * fv + b)  # · ∂g/∂f = 2f + b
        da = jnp.sum(df * df_da(x, a))  # · ∂f/∂a, summed over n
        db = jnp.sum(dg * fv)  # ∂g/∂b = f
        dc = jnp.sum(dh * dh_dc(gv, c))  # ∂h/∂c
        return Backprop(L, {"a": da, "b": db, "c": dc}, {"f": df, "g": dg, "h": dh})

    def example() -> tuple[Params, Batch]:
        """a = 0.5, b = 1, c = 2 at x = (−1, 0, 1, 2), y = (0, 0.5, 1, 2).

        The question prints no numbers; these are small and round.
        """
        params = {"a": jnp.float32(0.5), "b": jnp.float32(1.0), "c": jnp.float32(2.0)}
        x = jnp.array([-1.0, 0.0, 1.0, 2.0], jnp.float32)
        y = jnp.array([0.0, 0.5, 1.0, 2.0], jnp.float32)
        return params, (x, y)

    return Model(
        id="C1",
        title=title or "chain ŷ = h(g(f(x, a), b), c), g(y, b) = y² + b·y",
        source=_SOURCE,
        init=init,
        loss=loss,
        backprop=backprop,
        example=example,
        predict=predict,
        adjoint_names=("f", "g", "h"),
        doc="docs/models/C1.md",
        loss_symbol="Loss",
        extras=fns,
    )


C1 = make_c1(title="chain ŷ = h(g(f(x, a), b), c) with f = tanh(a·x), g = f² + b·f, h = c·g")


# --------------------------------------------------------------------------- C2

_C2 = {"a": (), "b": (), "v": ("K",)}


def c2_init(key: jax.Array, consumers: int = 3, dtype: jnp.dtype = jnp.float32) -> Params:
    """a, b, and the K = ``consumers`` read-out weights v, all ~ N(0, 1)."""
    ka, kb, kv = jax.random.split(key, 3)
    return {
        "a": jax.random.normal(ka, (), dtype),
        "b": jax.random.normal(kb, (), dtype),
        "v": jax.random.normal(kv, (consumers,), dtype),
    }


def c2_loss(params: Params, batch: None = None) -> jax.Array:
    """Loss = Σₖ vₖ·f with f = a·b read by K consumers. C2 has no data: batch is ignored."""
    check_layout("C2", params, _C2)
    f = name(params["a"] * params["b"], "f")
    f_k = name(jnp.broadcast_to(f, params["v"].shape), "f_k")  # the fan-out
    return jnp.sum(params["v"] * f_k)


def c2_backprop(params: Params, batch: None = None) -> Backprop:
    """Sum what arrives at f, then through the multiply gate: ∂/∂a = b·Σ, ∂/∂b = a·Σ."""
    check_layout("C2", params, _C2)
    a, b, v = params["a"], params["b"], params["v"]
    f = a * b
    f_k = jnp.broadcast_to(f, v.shape)
    L = jnp.sum(v * f_k)
    df_k = v  # ∂Loss/∂uₖ · ∂uₖ/∂fₖ = 1 · vₖ: what arrives from consumer k
    df = jnp.sum(df_k)  # fan-out: the arriving gradients add
    da = b * df  # ∂f/∂a = b
    db = a * df  # ∂f/∂b = a
    dv = f_k  # ∂uₖ/∂vₖ = f
    return Backprop(L, {"a": da, "b": db, "v": dv}, {"f": df, "f_k": df_k})


def c2_example() -> tuple[Params, None]:
    """a = 2, b = 3, v = (−0.2, 0.4, 0.6): the answer's arriving gradients, 0.8 in all.

    The answer's a and b were in its lost image; with these, ∂/∂a = 3·0.8 = 2.4 and
    ∂/∂b = 2·0.8 = 1.6.
    """
    params = {
        "a": jnp.float32(2.0),
        "b": jnp.float32(3.0),
        "v": jnp.array([-0.2, 0.4, 0.6], jnp.float32),
    }
    return params, None


C2 = Model(
    id="C2",
    title="fan-out through a multiply gate f(a, b) = a·b",
    source=_SOURCE,
    init=c2_init,
    loss=c2_loss,
    backprop=c2_backprop,
    example=c2_example,
    adjoint_names=("f", "f_k"),
    doc="docs/models/C2.md",
)

MODELS = (C1, C2)
