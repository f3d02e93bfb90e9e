r"""G2 and G3: logistic regression by gradient descent, from seed 000.

G2, one example with two features ``x = (x1, x2)`` and a label ``y`` in [0, 1]::

    z = w1·x1 + w2·x2 + b
    a = σ(z) = 1/(1 + e^(−z))
    L(a, y) = −(y·log a + (1 − y)·log(1 − a))

Backward, as the document derives it::

    dL/da = −y/a + (1 − y)/(1 − a)
    da/dz = a(1 − a)
    dz    = dL/da · da/dz = a − y
    dw1 = x1·dz        dw2 = x2·dz        db = dz

and the update ``w ← w − α·dw``, ``b ← b − α·db`` (``gd.optim.gd(α)``).

G3, ``m`` examples. Batch-first: ``X`` has shape ``(m, n)``, the transpose of the
document's ``(n, m)``; ``w`` is ``(n,)``; ``y`` is ``(m,)``::

    z = X·w + b        a = σ(z)        J = (1/m)·Σᵢ L(aᵢ, yᵢ)
    dzᵢ = (aᵢ − yᵢ)/m                  (the mean puts 1/m on every example)
    dw  = Xᵀ·dz = (1/m)·Σᵢ xᵢ·(aᵢ − yᵢ)     db = Σᵢ dzᵢ = (1/m)·Σᵢ (aᵢ − yᵢ)

Why ``z`` is an adjoint and ``a`` is not
----------------------------------------
The loss is computed from the logit, ``L = y·softplus(−z) + (1 − y)·softplus(z)``
(:func:`gdjax.losses.bce_with_logits`), which is the document's ``L(a, y)`` with
``a = σ(z)`` but stays finite, with the finite gradient ``a − y``, at ``|z| = 1e4``.
Written the document's way, from ``a``, it does not: in float32 ``σ(z)`` rounds to
exactly 1 once ``z ≳ 17`` (to 0 below about −88), ``log(1 − a)`` is ``−inf`` and the
gradient is NaN. So ``a`` is not a node on the loss path and has no adjoint to check;
its adjoint would be ``dL/da = (a − y)/(a(1 − a))``, which is itself infinite wherever
``a`` rounds to 0 or 1. The backward pass does what the document does with it: it
multiplies ``dL/da`` by ``da/dz`` on paper and codes the product, ``dz = a − y``, which
is exact and finite everywhere. ``backprop`` reports the adjoint ``"z"``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gdjax._validate import UsageError, check_shape, is_concrete
from gdjax.losses import bce_with_logits, sigmoid
from gdjax.models._base import Backprop, Model, check_layout, uniform_fan_in, unpack_xy
from gdjax.naming import name

__all__ = ["G2", "G3", "MODELS"]

Params = dict[str, jax.Array]
Batch = tuple[jax.Array, jax.Array]

_SOURCE = "000_f64d53064821a188.txt"


def _check_labels(model: str, y: jax.Array) -> None:
    """Cross-entropy needs labels (or soft labels) in [0, 1]."""
    if is_concrete(y):
        arr = np.asarray(y)
        if arr.size and (arr.min() < 0 or arr.max() > 1):
            raise UsageError(
                f"{model}: batch y holds labels outside [0, 1] (min {arr.min()}, max "
                f"{arr.max()}). Encode the classes as 0 and 1, e.g. y = (labels == positive)."
            )


# --------------------------------------------------------------------------- G2

_G2 = {"w1": (), "w2": (), "b": ()}


def _g2_data(params: Params, batch: Any) -> Batch:
    x, y = unpack_xy("G2", batch, ("x", "y"))
    check_layout("G2", params, _G2, {"x": x, "y": y}, {"x": (2,), "y": ()})
    _check_labels("G2", y)
    return x, y


def g2_init(key: jax.Array, dtype: jnp.dtype = jnp.float32) -> Params:
    """w1, w2, b ~ U(−1/√2, 1/√2)."""
    k1, k2, k3 = jax.random.split(key, 3)
    return {
        "w1": uniform_fan_in(k1, (), 2, dtype),
        "w2": uniform_fan_in(k2, (), 2, dtype),
        "b": uniform_fan_in(k3, (), 2, dtype),
    }


def g2_predict(params: Params, x: jax.Array) -> jax.Array:
    """a = σ(w1·x1 + w2·x2 + b), the probability of class 1, for x of shape (..., 2)."""
    x = jnp.asarray(x)
    check_shape("x", x, (*(None,) * max(x.ndim - 1, 0), 2), hint="G2 has two features.")
    return sigmoid(params["w1"] * x[..., 0] + params["w2"] * x[..., 1] + params["b"])


def g2_loss(params: Params, batch: Batch) -> jax.Array:
    """L = −(y·log σ(z) + (1 − y)·log(1 − σ(z))) with z = w1·x1 + w2·x2 + b."""
    x, y = _g2_data(params, batch)
    z = name(params["w1"] * x[0] + params["w2"] * x[1] + params["b"], "z")
    return bce_with_logits(z, y)


def g2_backprop(params: Params, batch: Batch) -> Backprop:
    """dz = a − y; dw1 = x1·dz, dw2 = x2·dz, db = dz."""
    x, y = _g2_data(params, batch)
    z = params["w1"] * x[0] + params["w2"] * x[1] + params["b"]
    a = sigmoid(z)
    L = bce_with_logits(z, y)
    dz = a - y  # dL/da · da/dz = (−y/a + (1 − y)/(1 − a))·a(1 − a)
    dw1 = x[0] * dz  # ∂z/∂w1 = x1
    dw2 = x[1] * dz  # ∂z/∂w2 = x2
    db = dz  # ∂z/∂b = 1
    return Backprop(L, {"w1": dw1, "w2": dw2, "b": db}, {"z": dz})


def g2_example() -> tuple[Params, Batch]:
    """x = (1, 2), y = 1 at w1 = 1, w2 = −0.5, b = 0 (seed 000 lost its own numbers).

    Then z = 0, a = 0.5, L = log 2, dz = −0.5, dw1 = −0.5, dw2 = −1, db = −0.5.
    """
    params = {"w1": jnp.float32(1.0), "w2": jnp.float32(-0.5), "b": jnp.float32(0.0)}
    return params, (jnp.array([1.0, 2.0], jnp.float32), jnp.float32(1.0))


G2 = Model(
    id="G2",
    title="logistic regression, one example, two features",
    source=_SOURCE,
    init=g2_init,
    loss=g2_loss,
    backprop=g2_backprop,
    example=g2_example,
    predict=g2_predict,
    adjoint_names=("z",),
    doc="docs/models/G2.md",
)


# --------------------------------------------------------------------------- G3

_G3 = {"w": ("n",), "b": ()}


def _g3_data(params: Params, batch: Any) -> Batch:
    X, y = unpack_xy("G3", batch)
    check_layout("G3", params, _G3, {"X": X, "y": y}, {"X": ("m", "n"), "y": ("m",)})
    _check_labels("G3", y)
    return X, y


def g3_init(key: jax.Array, n: int = 2, dtype: jnp.dtype = jnp.float32) -> Params:
    """w, b ~ U(−1/√n, 1/√n)."""
    kw, kb = jax.random.split(key)
    return {"w": uniform_fan_in(kw, (n,), n, dtype), "b": uniform_fan_in(kb, (), n, dtype)}


def g3_predict(params: Params, X: jax.Array) -> jax.Array:
    """a = σ(X·w + b), the probability of class 1, for X of shape (..., n)."""
    X = jnp.asarray(X)
    n = params["w"].shape[0]
    check_shape("X", X, (*(None,) * max(X.ndim - 1, 0), n), hint=f"G3 has n = {n} features.")
    return sigmoid(X @ params["w"] + params["b"])


def g3_loss(params: Params, batch: Batch) -> jax.Array:
    """J = (1/m)·Σᵢ L(σ(zᵢ), yᵢ) with z = X·w + b."""
    X, y = _g3_data(params, batch)
    z = name(X @ params["w"] + params["b"], "z")
    return jnp.mean(bce_with_logits(z, y))


def g3_backprop(params: Params, batch: Batch) -> Backprop:
    """dzᵢ = (aᵢ − yᵢ)/m; dw = Xᵀ·dz, db = Σᵢ dzᵢ: the average per-example gradient."""
    X, y = _g3_data(params, batch)
    m = X.shape[0]
    z = X @ params["w"] + params["b"]
    a = sigmoid(z)
    J = jnp.mean(bce_with_logits(z, y))
    dz = (a - y) / m  # ∂J/∂Lᵢ = 1/m, then G2's dLᵢ/dzᵢ = aᵢ − yᵢ
    dw = X.T @ dz  # dw_j = (1/m)·Σᵢ x_j⁽ⁱ⁾·(aᵢ − yᵢ)
    db = jnp.sum(dz)
    return Backprop(J, {"w": dw, "b": db}, {"z": dz})


def g3_example() -> tuple[Params, Batch]:
    """Four labelled points at w = 0, b = 0, the course's starting point.

    Every a is 0.5, so J = log 2, dz = (0.5 − y)/4, dw = (−0.5, 0.0625), db = 0.
    """
    X = jnp.array([[1.0, 2.0], [-1.0, 0.5], [2.0, -1.0], [0.0, 1.0]], jnp.float32)
    y = jnp.array([1.0, 0.0, 1.0, 0.0], jnp.float32)
    params = {"w": jnp.zeros(2, jnp.float32), "b": jnp.float32(0.0)}
    return params, (X, y)


G3 = Model(
    id="G3",
    title="logistic regression, m examples, mean cross-entropy",
    source=_SOURCE,
    init=g3_init,
    loss=g3_loss,
    backprop=g3_backprop,
    example=g3_example,
    predict=g3_predict,
    adjoint_names=("z",),
    doc="docs/models/G3.md",
    loss_symbol="J",
)

MODELS = (G2, G3)
