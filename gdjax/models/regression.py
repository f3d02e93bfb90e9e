r"""R1–R4: the four regression models of seed 001, with mean squared error.

Every model here has the loss :math:`\mathcal L = \frac1m \|\hat y - y\|^2` over ``m``
examples, so every backward pass starts from the same adjoint::

    dŷ = ∂L/∂ŷ = (2/m)·(ŷ − y)                                   shape (m,)

Data is batch-first: ``X`` has shape ``(m, n)`` (one row per example), the transpose of
the document's ``(n, m)``; ``y`` has shape ``(m,)``. The document's row vectors ``w``
(1, n) and ``w2`` (1, k) are plain vectors ``(n,)`` and ``(k,)`` here, and ``b1``
(k, 1) is ``(k,)``.

R1, univariate: ``x, y`` of shape ``(m,)``; ``ŷ = w·x + b``::

    dw = Σᵢ dŷᵢ·xᵢ = (2/m)·Σ(ŷ − y)·x        db = Σᵢ dŷᵢ = (2/m)·Σ(ŷ − y)

R2, multivariate: ``ŷ = X·w + b`` (the document's ``wX + b``)::

    dw = Xᵀ·dŷ                                db = Σᵢ dŷᵢ

R3, two stacked linear layers: ``Z = X·W1ᵀ + b1`` of shape ``(m, k)`` (the document's
``Z = W1·X + b1``, transposed), ``ŷ = Z·w2 + b2``::

    dw2 = Zᵀ·dŷ        db2 = Σᵢ dŷᵢ
    dZ  = dŷ·w2ᵀ       (outer product, (m, k))
    dW1 = dZᵀ·X        db1 = Σᵢ dZᵢ

R4, the same with a sigmoid between the layers: ``A = σ(Z)``, ``ŷ = A·w2 + b2``::

    dw2 = Aᵀ·dŷ        db2 = Σᵢ dŷᵢ
    dA  = dŷ·w2ᵀ
    dZ  = dA ⊙ A ⊙ (1 − A)                    (σ'(Z) = σ(Z)(1 − σ(Z)))
    dW1 = dZᵀ·X        db1 = Σᵢ dZᵢ

The seed prints no numbers for these models; each ``example()`` is a small point chosen
to give round numbers (see its docstring).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from gdjax._validate import check_shape
from gdjax.losses import mean_squared_error, sigmoid
from gdjax.models._base import Backprop, Model, check_layout, uniform_fan_in, unpack_xy
from gdjax.naming import name

__all__ = ["MODELS", "R1", "R2", "R3", "R4", "uniform_fan_in", "unpack_xy"]

Params = dict[str, jax.Array]
Batch = tuple[jax.Array, jax.Array]

_SOURCE = "001_b7fb807e373bb886.txt"
_XY = {"X": ("m", "n"), "y": ("m",)}


# --------------------------------------------------------------------------- helpers


def _check_features(model: str, X: Any, n: int) -> jax.Array:
    X = jnp.asarray(X)
    check_shape("x", X, (*(None,) * max(X.ndim - 1, 0), n), hint=f"{model} has n = {n} features.")
    return X


def _mse_adjoint(yhat: jax.Array, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    """L = (1/m)‖ŷ − y‖² and its adjoint dŷ = (2/m)(ŷ − y)."""
    r = yhat - y
    m = r.shape[0]
    return jnp.sum(r * r) / m, 2 * r / m


# --------------------------------------------------------------------------- R1

_R1 = {"w": (), "b": ()}


def _r1_data(params: Params, batch: Any) -> Batch:
    x, y = unpack_xy("R1", batch, ("x", "y"))
    check_layout("R1", params, _R1, {"x": x, "y": y}, {"x": ("m",), "y": ("m",)})
    return x, y


def r1_init(key: jax.Array, dtype: jnp.dtype = jnp.float32) -> Params:
    """w, b ~ U(−1, 1)."""
    kw, kb = jax.random.split(key)
    return {"w": uniform_fan_in(kw, (), 1, dtype), "b": uniform_fan_in(kb, (), 1, dtype)}


def r1_predict(params: Params, x: jax.Array) -> jax.Array:
    """ŷ = w·x + b, elementwise."""
    return params["w"] * jnp.asarray(x) + params["b"]


def r1_loss(params: Params, batch: Batch) -> jax.Array:
    """L = (1/m)‖w·x + b − y‖²."""
    x, y = _r1_data(params, batch)
    yhat = name(params["w"] * x + params["b"], "yhat")
    return mean_squared_error(yhat, y)


def r1_backprop(params: Params, batch: Batch) -> Backprop:
    """dw = (2/m)Σ(ŷ − y)·x, db = (2/m)Σ(ŷ − y)."""
    x, y = _r1_data(params, batch)
    yhat = params["w"] * x + params["b"]
    L, dyhat = _mse_adjoint(yhat, y)  # dŷ = (2/m)(ŷ − y)
    dw = jnp.sum(dyhat * x)  # ∂ŷᵢ/∂w = xᵢ
    db = jnp.sum(dyhat)  # ∂ŷᵢ/∂b = 1
    return Backprop(L, {"w": dw, "b": db}, {"yhat": dyhat})


def r1_example() -> tuple[Params, Batch]:
    """The line y = 2x + 1 at x = 1…4, from w = b = 0: L = 41, dw = −35, db = −12."""
    x = jnp.array([1.0, 2.0, 3.0, 4.0], jnp.float32)
    params = {"w": jnp.float32(0.0), "b": jnp.float32(0.0)}
    return params, (x, 2 * x + 1)


R1 = Model(
    id="R1",
    title="univariate linear regression ŷ = w·x + b, L = (1/m)‖ŷ − y‖²",
    source=_SOURCE,
    init=r1_init,
    loss=r1_loss,
    backprop=r1_backprop,
    example=r1_example,
    predict=r1_predict,
    adjoint_names=("yhat",),
    doc="docs/models/R1.md",
)


# --------------------------------------------------------------------------- R2

_R2 = {"w": ("n",), "b": ()}


def _r2_data(params: Params, batch: Any) -> Batch:
    X, y = unpack_xy("R2", batch)
    check_layout("R2", params, _R2, {"X": X, "y": y}, _XY)
    return X, y


def r2_init(key: jax.Array, n: int = 2, dtype: jnp.dtype = jnp.float32) -> Params:
    """w, b ~ U(−1/√n, 1/√n)."""
    kw, kb = jax.random.split(key)
    return {"w": uniform_fan_in(kw, (n,), n, dtype), "b": uniform_fan_in(kb, (), n, dtype)}


def r2_predict(params: Params, X: jax.Array) -> jax.Array:
    """ŷ = X·w + b for X of shape (..., n)."""
    X = _check_features("R2", X, params["w"].shape[0])
    return X @ params["w"] + params["b"]


def r2_loss(params: Params, batch: Batch) -> jax.Array:
    """L = (1/m)‖X·w + b − y‖²."""
    X, y = _r2_data(params, batch)
    yhat = name(X @ params["w"] + params["b"], "yhat")
    return mean_squared_error(yhat, y)


def r2_backprop(params: Params, batch: Batch) -> Backprop:
    """dw = Xᵀ·dŷ, db = Σ dŷ."""
    X, y = _r2_data(params, batch)
    yhat = X @ params["w"] + params["b"]
    L, dyhat = _mse_adjoint(yhat, y)
    dw = X.T @ dyhat
    db = jnp.sum(dyhat)
    return Backprop(L, {"w": dw, "b": db}, {"yhat": dyhat})


def _xy_example() -> Batch:
    X = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, -1.0]], jnp.float32)
    return X, X @ jnp.array([2.0, -1.0], jnp.float32)


def r2_example() -> tuple[Params, Batch]:
    """Four examples of y = 2x₁ − x₂ at w = (1, 1), b = 0: L = 5.5, dw = (−4, 3.5), db = −1."""
    params = {"w": jnp.array([1.0, 1.0], jnp.float32), "b": jnp.float32(0.0)}
    return params, _xy_example()


R2 = Model(
    id="R2",
    title="multivariate linear regression ŷ = X·w + b",
    source=_SOURCE,
    init=r2_init,
    loss=r2_loss,
    backprop=r2_backprop,
    example=r2_example,
    predict=r2_predict,
    adjoint_names=("yhat",),
    doc="docs/models/R2.md",
)


# --------------------------------------------------------------------------- R3 and R4

_TWO_LAYER = {"W1": ("k", "n"), "b1": ("k",), "w2": ("k",), "b2": ()}


def _two_layer_data(model: str, params: Params, batch: Any) -> Batch:
    X, y = unpack_xy(model, batch)
    check_layout(model, params, _TWO_LAYER, {"X": X, "y": y}, _XY)
    return X, y


def two_layer_init(
    key: jax.Array, n: int = 2, k: int = 3, dtype: jnp.dtype = jnp.float32
) -> Params:
    """W1, b1 ~ U(−1/√n, 1/√n); w2, b2 ~ U(−1/√k, 1/√k)."""
    k1, k2, k3, k4 = jax.random.split(key, 4)
    return {
        "W1": uniform_fan_in(k1, (k, n), n, dtype),
        "b1": uniform_fan_in(k2, (k,), n, dtype),
        "w2": uniform_fan_in(k3, (k,), k, dtype),
        "b2": uniform_fan_in(k4, (), k, dtype),
    }


def _two_layer_example() -> tuple[Params, Batch]:
    params = {
        "W1": jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]], jnp.float32),
        "b1": jnp.array([0.0, 0.5, -0.5], jnp.float32),
        "w2": jnp.array([1.0, -1.0, 0.5], jnp.float32),
        "b2": jnp.float32(0.0),
    }
    return params, _xy_example()


def r3_predict(params: Params, X: jax.Array) -> jax.Array:
    """ŷ = (X·W1ᵀ + b1)·w2 + b2 for X of shape (..., n)."""
    X = _check_features("R3", X, params["W1"].shape[1])
    return (X @ params["W1"].T + params["b1"]) @ params["w2"] + params["b2"]


def r3_loss(params: Params, batch: Batch) -> jax.Array:
    """Z = X·W1ᵀ + b1, ŷ = Z·w2 + b2, L = (1/m)‖ŷ − y‖²."""
    X, y = _two_layer_data("R3", params, batch)
    Z = name(X @ params["W1"].T + params["b1"], "Z")
    yhat = name(Z @ params["w2"] + params["b2"], "yhat")
    return mean_squared_error(yhat, y)


def r3_backprop(params: Params, batch: Batch) -> Backprop:
    """Right to left through the two linear layers."""
    X, y = _two_layer_data("R3", params, batch)
    Z = X @ params["W1"].T + params["b1"]
    yhat = Z @ params["w2"] + params["b2"]
    L, dyhat = _mse_adjoint(yhat, y)
    dw2 = Z.T @ dyhat  # ∂ŷᵢ/∂w2 = Zᵢ
    db2 = jnp.sum(dyhat)
    dZ = jnp.outer(dyhat, params["w2"])  # ∂ŷᵢ/∂Zᵢ = w2
    dW1 = dZ.T @ X  # ∂Zᵢ/∂W1 = Xᵢ (per row of W1)
    db1 = jnp.sum(dZ, axis=0)
    grads = {"W1": dW1, "b1": db1, "w2": dw2, "b2": db2}
    return Backprop(L, grads, {"Z": dZ, "yhat": dyhat})


def r3_example() -> tuple[Params, Batch]:
    """R2's data through a 2-3-1 linear network with small round weights."""
    return _two_layer_example()


R3 = Model(
    id="R3",
    title="two stacked linear layers Z = X·W1ᵀ + b1, ŷ = Z·w2 + b2",
    source=_SOURCE,
    init=two_layer_init,
    loss=r3_loss,
    backprop=r3_backprop,
    example=r3_example,
    predict=r3_predict,
    adjoint_names=("Z", "yhat"),
    doc="docs/models/R3.md",
)


def r4_predict(params: Params, X: jax.Array) -> jax.Array:
    """ŷ = σ(X·W1ᵀ + b1)·w2 + b2 for X of shape (..., n)."""
    X = _check_features("R4", X, params["W1"].shape[1])
    return sigmoid(X @ params["W1"].T + params["b1"]) @ params["w2"] + params["b2"]


def r4_loss(params: Params, batch: Batch) -> jax.Array:
    """Z = X·W1ᵀ + b1, A = σ(Z), ŷ = A·w2 + b2, L = (1/m)‖ŷ − y‖²."""
    X, y = _two_layer_data("R4", params, batch)
    Z = name(X @ params["W1"].T + params["b1"], "Z")
    A = name(sigmoid(Z), "A")
    yhat = name(A @ params["w2"] + params["b2"], "yhat")
    return mean_squared_error(yhat, y)


def r4_backprop(params: Params, batch: Batch) -> Backprop:
    """Right to left through linear, sigmoid, linear."""
    X, y = _two_layer_data("R4", params, batch)
    Z = X @ params["W1"].T + params["b1"]
    A = sigmoid(Z)
    yhat = A @ params["w2"] + params["b2"]
    L, dyhat = _mse_adjoint(yhat, y)
    dw2 = A.T @ dyhat  # ∂ŷᵢ/∂w2 = Aᵢ
    db2 = jnp.sum(dyhat)
    dA = jnp.outer(dyhat, params["w2"])  # ∂ŷᵢ/∂Aᵢ = w2
    dZ = dA * A * (1 - A)  # σ'(Z) = σ(Z)(1 − σ(Z))
    dW1 = dZ.T @ X
    db1 = jnp.sum(dZ, axis=0)
    grads = {"W1": dW1, "b1": db1, "w2": dw2, "b2": db2}
    return Backprop(L, grads, {"Z": dZ, "A": dA, "yhat": dyhat})


def r4_example() -> tuple[Params, Batch]:
    """R3's point, now with a sigmoid after the first layer."""
    return _two_layer_example()


R4 = Model(
    id="R4",
    title="two layers with a sigmoid: A = σ(X·W1ᵀ + b1), ŷ = A·w2 + b2",
    source=_SOURCE,
    init=two_layer_init,
    loss=r4_loss,
    backprop=r4_backprop,
    example=r4_example,
    predict=r4_predict,
    adjoint_names=("Z", "A", "yhat"),
    doc="docs/models/R4.md",
)

MODELS = (R1, R2, R3, R4)
