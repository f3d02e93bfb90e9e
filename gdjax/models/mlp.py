r"""D1: the K-layer fully connected network of seed 003 (Deisenroth et al., *Mathematics for
Machine Learning*, §5.6 "Backpropagation and Automatic Differentiation").

The text's network, for one input ``x`` and target ``y``::

    f₀ = x
    fᵢ = σᵢ(Aᵢ₋₁·fᵢ₋₁ + bᵢ₋₁),        i = 1 … K
    L(θ) = ‖y − f_K‖²,                θ = {A₀, b₀, …, A_{K−1}, b_{K−1}}

with each σᵢ one of sigmoid, tanh, ReLU, or the identity (a linear output layer). In code,
layer ``i`` holds ``params[i − 1] = {"W": Aᵢ₋₁, "b": bᵢ₋₁}`` with ``W`` of shape
``(nᵢ, nᵢ₋₁)``, and the data are batch-first, one example per row: ``X: (m, n₀)``,
``Y: (m, n_K)``. The forward pass names the pre-activation ``zᵢ`` and the layer output
``aᵢ`` (the text's ``fᵢ``)::

    a₀ = X
    zᵢ = aᵢ₋₁·Wᵢᵀ + bᵢ            (m, nᵢ)   — the text's Aᵢ₋₁·fᵢ₋₁ + bᵢ₋₁, one row per example
    aᵢ = σᵢ(zᵢ)                   (m, nᵢ)
    L  = Σ ‖Y − a_K‖²             ("sse", the text's loss summed over the m examples)
    or ½ Σ (Y − a_K)²             ("half_sse", seed 002's loss, used by N1)

Backward, right to left. The text's point is that ∂L/∂θⱼ reuses ∂L/∂fⱼ₊₁: one line per
chain-rule step, each reusing the line above it::

    da_K = ∂L/∂a_K = 2(a_K − Y)        ("sse")     or   a_K − Y      ("half_sse")
    for i = K … 1:
        dzᵢ   = daᵢ ⊙ σᵢ'(zᵢ)          σ' = a(1 − a) | 1 − a² | [z > 0] | 1
        dWᵢ   = dzᵢᵀ·aᵢ₋₁              (nᵢ, nᵢ₋₁)  ∂L/∂Aᵢ₋₁: the text's "blue" ∂fᵢ/∂θᵢ₋₁
        dbᵢ   = Σ_rows dzᵢ             (nᵢ,)       ∂L/∂bᵢ₋₁
        daᵢ₋₁ = dzᵢ·Wᵢ                 (m, nᵢ₋₁)   ∂L/∂fᵢ₋₁: the text's "orange" ∂fᵢ/∂fᵢ₋₁

The adjoints reported are ``"z1" … "zK"`` (dL/dzᵢ) and ``"a1" … "aK"`` (dL/daᵢ, which the
text writes ∂L/∂fᵢ).

:func:`make` builds the network for any layer sizes, activations and either loss;
``REGISTRY["D1"]`` is :data:`D1`, a 3-4-4-3-2 network that uses all four activations.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from numbers import Integral
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gdjax._validate import UsageError, check_finite, check_shape
from gdjax.losses import half_squared_error, sigmoid, squared_error
from gdjax.models._base import Backprop, Model, check_layout, unpack_xy
from gdjax.naming import name

__all__ = ["ACTIVATIONS", "D1", "LOSSES", "MODELS", "check_params", "layer_grad_norms", "make"]

Layer = dict[str, jax.Array]
Params = list[Layer]
Batch = tuple[jax.Array, jax.Array]

_SOURCE = "003_357c1e21ab39f119.txt"

# name -> (σ(z), σ'(z) written with the layer's own output a = σ(z) where the text does)
_ACTIVATIONS: dict[str, tuple[Callable, Callable]] = {
    "sigmoid": (sigmoid, lambda z, a: a * (1 - a)),
    "tanh": (jnp.tanh, lambda z, a: 1 - a * a),
    "relu": (jax.nn.relu, lambda z, a: (z > 0).astype(z.dtype)),
    "identity": (lambda z: z, lambda z, a: jnp.ones_like(z)),
}
ACTIVATIONS: tuple[str, ...] = tuple(_ACTIVATIONS)

# name -> (L(a_K, Y), ∂L/∂a_K)
_LOSSES: dict[str, tuple[Callable, Callable]] = {
    "sse": (squared_error, lambda a, y: 2 * (a - y)),
    "half_sse": (half_squared_error, lambda a, y: a - y),
}
LOSSES: tuple[str, ...] = tuple(_LOSSES)


def _gain(activation: str) -> float:
    """Initial weight scale times √n_in: √2 for ReLU (He et al. 2015), 1 otherwise (LeCun)."""
    return float(np.sqrt(2.0)) if activation == "relu" else 1.0


# --------------------------------------------------------------------------- arguments


def _sizes(sizes: Any) -> tuple[int, ...]:
    if isinstance(sizes, str | bytes) or not isinstance(sizes, Sequence):
        raise UsageError(
            f"`sizes` must be a sequence of layer widths such as (3, 4, 2), got {sizes!r}."
        )
    if len(sizes) < 2:
        raise UsageError(
            f"`sizes` must list at least an input and an output width, e.g. (3, 2); got "
            f"{tuple(sizes)!r}."
        )
    if not all(isinstance(n, Integral) and not isinstance(n, bool) and n > 0 for n in sizes):
        raise UsageError(f"`sizes` must hold positive integers, got {tuple(sizes)!r}.")
    return tuple(int(n) for n in sizes)


def _activations(activation: Any, layers: int) -> tuple[str, ...]:
    names = (activation,) * layers if isinstance(activation, str) else activation
    if not isinstance(names, Sequence):
        raise UsageError(
            f"`activation` must be one name or a list with one name per layer, got {activation!r}."
        )
    names = tuple(names)
    if len(names) != layers:
        raise UsageError(
            f"`activation` lists {len(names)} name(s) but the network has {layers} layer(s) "
            f"(len(sizes) - 1). Pass one name, or exactly {layers}."
        )
    for i, a in enumerate(names, start=1):
        if not isinstance(a, str) or a not in _ACTIVATIONS:
            raise UsageError(
                f"`activation` of layer {i} is {a!r}, which is not known. "
                f"Choose one of {', '.join(ACTIVATIONS)}."
            )
    return names


def _loss_name(loss: Any) -> str:
    if not isinstance(loss, str) or loss not in _LOSSES:
        raise UsageError(f"`loss` must be one of {', '.join(LOSSES)}, got {loss!r}.")
    return loss


def check_params(model_id: str, params: Any, sizes: Sequence[int]) -> None:
    """Raise a clear error unless ``params`` is a list of ``{"W", "b"}`` layers for ``sizes``."""
    sizes = tuple(sizes)
    layers = len(sizes) - 1
    if not isinstance(params, Sequence) or isinstance(params, str | Mapping):
        raise UsageError(
            f"{model_id}: `params` must be a list of {layers} layer dicts "
            f'{{"W": (n_out, n_in), "b": (n_out,)}}, got {type(params).__name__}. '
            f"Build it with the model's init() or example()."
        )
    if len(params) != layers:
        raise UsageError(
            f"{model_id}: `params` has {len(params)} layer(s), but sizes {sizes} needs "
            f"{layers}. Build it with the model's init()."
        )
    for i, layer in enumerate(params, start=1):
        where = f"{model_id} layer {i} (params[{i - 1}])"
        check_layout(where, layer, {"W": ("n_out", "n_in"), "b": ("n_out",)})
        hint = f"Layer {i} maps {sizes[i - 1]} units to {sizes[i]} (sizes = {sizes})."
        check_shape(f"params[{i - 1}]['W']", layer["W"], (sizes[i], sizes[i - 1]), hint)


def _data(model_id: str, params: Any, batch: Any, sizes: tuple[int, ...]) -> Batch:
    check_params(model_id, params, sizes)
    X, Y = unpack_xy(model_id, batch, ("X", "Y"))
    _check_X(model_id, X, sizes)
    check_shape(
        "batch Y",
        Y,
        (None, sizes[-1]),
        f"{model_id} has {sizes[-1]} output unit(s): Y is (m, {sizes[-1]}); "
        f"for one output reshape y with y[:, None].",
    )
    check_layout(model_id, {}, {}, {"X": X, "Y": Y}, {"X": ("m", "n0"), "Y": ("m", "nK")})
    return X, Y


def _check_X(model_id: str, X: jax.Array, sizes: tuple[int, ...]) -> None:
    hint = f"{model_id} takes {sizes[0]} input feature(s), one example per row."
    check_shape("batch X", X, (None, sizes[0]), hint)


# --------------------------------------------------------------------------- the network


def make(
    sizes: Sequence[int],
    activation: str | Sequence[str] = "sigmoid",
    loss: str = "sse",
    *,
    model_id: str = "D1",
    title: str | None = None,
    source: str = _SOURCE,
    doc: str = "docs/models/D1.md",
) -> Model:
    """A fully connected network with hand-written backprop, as a :class:`~gdjax.Model`.

    Args:
      sizes: layer widths ``(n₀, n₁, …, n_K)``, input first; ``K = len(sizes) − 1 ≥ 1``.
      activation: one of ``"sigmoid"``, ``"tanh"``, ``"relu"``, ``"identity"`` for every
        layer, or a list with one name per layer (``σ₁ … σ_K``).
      loss: ``"sse"``, ``L = Σ ‖Y − a_K‖²`` (seed 003), or ``"half_sse"``,
        ``L = ½ Σ (Y − a_K)²`` (seed 002).
      model_id, title, source, doc: how the model describes itself (N1 is built here too).

    Returns:
      A ``Model`` whose params are a list of ``{"W": (nᵢ, nᵢ₋₁), "b": (nᵢ,)}``, one per
      layer, and whose batch is ``(X: (m, n₀), Y: (m, n_K))``. ``model.extras`` holds
      ``sizes``, ``activations`` and ``loss``.

    >>> model = make((2, 3, 1), activation=["tanh", "sigmoid"], loss="half_sse")
    >>> params = model.init(jax.random.key(0))
    """
    sizes = _sizes(sizes)
    layers = len(sizes) - 1
    acts = _activations(activation, layers)
    loss_name = _loss_name(loss)
    loss_fn, dloss = _LOSSES[loss_name]

    def init(key: jax.Array, dtype: jnp.dtype = jnp.float32) -> Params:
        """Wᵢ ~ N(0, g/nᵢ₋₁) with g = 2 for ReLU layers (He) and 1 otherwise (LeCun); b = 0.

        Either keeps the variance of zᵢ near that of the layer's inputs, so a deep network
        starts with signals (and gradients) of order one.
        """
        keys = jax.random.split(key, layers)
        return [
            {
                "W": jax.random.normal(k, (n_out, n_in), dtype)
                * jnp.asarray(_gain(act) / np.sqrt(n_in), dtype),
                "b": jnp.zeros((n_out,), dtype),
            }
            for k, n_in, n_out, act in zip(keys, sizes[:-1], sizes[1:], acts)
        ]

    def predict(params: Params, X: jax.Array) -> jax.Array:
        """f_K(θ, X): the network's output, ``(m, n_K)`` for ``X`` of shape ``(m, n₀)``."""
        check_params(model_id, params, sizes)
        X = jnp.asarray(X)
        _check_X(model_id, X, sizes)
        check_finite("X", X)
        a = X
        for layer, act in zip(params, acts):
            a = _ACTIVATIONS[act][0](a @ layer["W"].T + layer["b"])
        return a

    def loss_(params: Params, batch: Batch) -> jax.Array:
        """L = Σ‖Y − f_K‖² (or ½Σ(Y − f_K)²), naming every zᵢ and aᵢ."""
        X, Y = _data(model_id, params, batch, sizes)
        a = X
        for i, (layer, act) in enumerate(zip(params, acts), start=1):
            z = name(a @ layer["W"].T + layer["b"], f"z{i}")
            a = name(_ACTIVATIONS[act][0](z), f"a{i}")
        return loss_fn(a, Y)

    def backprop(params: Params, batch: Batch) -> Backprop:
        """The text's backward pass: from the output back, each layer reusing ∂L/∂fᵢ."""
        X, Y = _data(model_id, params, batch, sizes)
        a, z = [X], [None]  # a[i], z[i] for layer i; a[0] = f₀ = X
        for layer, act in zip(params, acts):
            z.append(a[-1] @ layer["W"].T + layer["b"])
            a.append(_ACTIVATIONS[act][0](z[-1]))
        L = loss_fn(a[-1], Y)

        grads: Params = [{} for _ in range(layers)]
        adjoints: dict[str, jax.Array] = {}
        da = dloss(a[-1], Y)  # ∂L/∂f_K
        for i in range(layers, 0, -1):
            W = params[i - 1]["W"]
            adjoints[f"a{i}"] = da
            dz = da * _ACTIVATIONS[acts[i - 1]][1](z[i], a[i])  # ∂fᵢ/∂zᵢ = σᵢ'(zᵢ)
            adjoints[f"z{i}"] = dz
            grads[i - 1]["W"] = dz.T @ a[i - 1]  # ∂zᵢ/∂Wᵢ = aᵢ₋₁, summed over examples
            grads[i - 1]["b"] = jnp.sum(dz, axis=0)  # ∂zᵢ/∂bᵢ = 1
            da = dz @ W  # ∂zᵢ/∂aᵢ₋₁ = Wᵢ: the ∂L/∂fᵢ₋₁ the next layer down reuses
        return Backprop(L, grads, adjoints)

    def example(dtype: jnp.dtype = jnp.float32) -> tuple[Params, Batch]:
        """Four examples and weights with two decimals, from ``numpy``'s generator seed 0.

        ``W`` is drawn with ``init``'s scale, ``b`` ~ N(0, 0.1²), ``X`` ~ N(0, 1) and
        ``Y`` ~ U(0, 1) (a target that every σ_K can reach). Plain numbers a reader can
        copy, the same on every platform and JAX version.
        """
        rng = np.random.default_rng(0)
        params = [
            {
                "W": rng.standard_normal((n_out, n_in)) * _gain(act) / np.sqrt(n_in),
                "b": 0.1 * rng.standard_normal(n_out),
            }
            for n_in, n_out, act in zip(sizes[:-1], sizes[1:], acts)
        ]
        X = rng.standard_normal((4, sizes[0]))
        Y = rng.uniform(size=(4, sizes[-1]))
        return jax.tree.map(lambda v: jnp.asarray(np.round(v, 2), dtype), (params, (X, Y)))

    arch = "-".join(map(str, sizes))
    return Model(
        id=model_id,
        title=title or f"{arch} fully connected network ({', '.join(acts)}; {loss_name})",
        source=source,
        init=init,
        loss=loss_,
        backprop=backprop,
        example=example,
        predict=predict,
        adjoint_names=tuple(f"{v}{i}" for i in range(1, layers + 1) for v in "za"),
        doc=doc,
        extras={"sizes": sizes, "activations": acts, "loss": loss_name},
    )


def layer_grad_norms(grads: Params, *, include_bias: bool = True) -> jax.Array:
    r"""Per-layer gradient norms :math:`\sqrt{\|dW_i\|^2 + \|db_i\|^2}`, shape ``(K,)``.

    For the vanishing-gradient experiment: with sigmoid layers the norms typically shrink
    from the output (last entry) towards the input (first entry), since every layer down
    multiplies by ``σ' ≤ 1/4``. ``include_bias=False`` gives ``‖dWᵢ‖`` alone. Works under
    ``jit``/``vmap``.
    """
    if not isinstance(grads, Sequence) or not all(isinstance(g, Mapping) for g in grads):
        raise UsageError(
            "`grads` must be the list of per-layer dicts that a network's backprop returns "
            f"(model.backprop(params, batch).grads), got {type(grads).__name__}."
        )
    keys = ("W", "b") if include_bias else ("W",)
    return jnp.stack([jnp.sqrt(sum(jnp.sum(jnp.square(g[k])) for k in keys)) for g in grads])


D1 = make(
    (3, 4, 4, 3, 2),
    activation=("tanh", "sigmoid", "relu", "identity"),
    loss="sse",
    title="K-layer fully connected network (3-4-4-3-2: tanh, sigmoid, ReLU, identity)",
)

MODELS = (D1,)
