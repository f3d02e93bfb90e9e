r"""N1: the 2-2-2-1 sigmoid network that seed 002 ("A Closer Look Into The Math Behind
Gradient Descent") works by hand, built on :func:`gdjax.models.mlp.make`.

Two inputs ``x1, x2``, two hidden layers of two sigmoid nodes (``h1, h2``), one sigmoid
output node (``out``); layer ``l`` = 1, 2, 3. Every node, as the article writes it::

    zˡₙ = Σᵢ wᵢ·aˡ⁻¹ᵢ + bˡₙ            aˡₙ = σ(zˡₙ) = 1/(1 + e^(−zˡₙ))        a⁰ = x

    L = ½(t − a³_out)²                 (t: the target)

The ten weights, numbered as the article does (w1–w4 input → hidden 1, w5–w8 hidden 1 →
hidden 2, w9–w10 hidden 2 → output), one bias per node (``b1_h1 … b3_out``)::

    z¹_h1 = w1·x1 + w2·x2 + b1_h1          z¹_h2 = w3·x1 + w4·x2 + b1_h2
    z²_h1 = w5·a¹_h1 + w6·a¹_h2 + b2_h1    z²_h2 = w7·a¹_h1 + w8·a¹_h2 + b2_h2
    z³_out = w9·a²_h1 + w10·a²_h2 + b3_out

The article's surviving text fixes w5 (hidden-1 node 1 → hidden-2 node 1), w9 (hidden-2
node 1 → output) and that w1 enters hidden-1 node 1; the rest of the numbering (each node's
incoming weights numbered in turn, top input first) is our convention, and it is simply
the row-major order of the layer matrices: ``W¹ = [[w1, w2], [w3, w4]]``,
``W² = [[w5, w6], [w7, w8]]``, ``W³ = [[w9, w10]]``.

Backward, the article's chain rule, right to left (δ = ∂L/∂z of a node)::

    ∂L/∂a³_out = a³_out − t                    ∂a/∂z = a(1 − a) for every node
    δ³_out  = (a³_out − t)·a³_out(1 − a³_out)
    ∂L/∂w10 = δ³_out·a²_h2                     ∂L/∂w9 = δ³_out·a²_h1
    δ²_h1   = δ³_out·w9·a²_h1(1 − a²_h1)       δ²_h2  = δ³_out·w10·a²_h2(1 − a²_h2)
    ∂L/∂w5  = δ²_h1·a¹_h1    ∂L/∂w6 = δ²_h1·a¹_h2    ∂L/∂w7 = δ²_h2·a¹_h1    ∂L/∂w8 = δ²_h2·a¹_h2
    δ¹_h1   = (δ²_h1·w5 + δ²_h2·w7)·a¹_h1(1 − a¹_h1)      (both paths through layer 2)
    δ¹_h2   = (δ²_h1·w6 + δ²_h2·w8)·a¹_h2(1 − a¹_h2)
    ∂L/∂w1  = δ¹_h1·x1       ∂L/∂w2 = δ¹_h1·x2       ∂L/∂w3 = δ¹_h2·x1       ∂L/∂w4 = δ¹_h2·x2
    ∂L/∂bˡₙ = δˡₙ

and one gradient-descent step ``wᵢ ← wᵢ − α·∂L/∂wᵢ`` with α = 0.5. These are exactly the
layer-matrix lines of :mod:`gdjax.models.mlp` (``dzᵢ = daᵢ ⊙ σ'(zᵢ)``, ``dWᵢ = dzᵢᵀ·aᵢ₋₁``,
``daᵢ₋₁ = dzᵢ·Wᵢ``), written out node by node; N1's ``backprop`` *is* that code.

Adjoints: ``"z1" "a1" "z2" "a2" "z3" "a3"`` hold ∂L/∂zˡ and ∂L/∂aˡ of layer l (shape
``(m, 2)``, or ``(m, 1)`` for the output layer); :func:`named_adjoints` splits them into the
article's nodes (``"z3_out"``, ``"a2_h1"``, …).

The example: the article printed its inputs, target and initial weights in images that
the scraped text lost; only the predicted output 0.85049311458 survives. ``example()``
therefore uses values we chose (x = (0.5, 1), t = 1, w1…w10 = 0.1, 0.2, …, 1.0, hidden
biases 0.25) and solves the one remaining number, the output bias b3_out = 0.309768413658,
so that the forward pass gives the article's 0.85049311458 (to 2·10⁻¹⁴ in float64).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gdjax._validate import UsageError, check_positive
from gdjax.models import mlp
from gdjax.models._base import Model

__all__ = [
    "BIASES",
    "MODELS",
    "N1",
    "NAMES",
    "SIZES",
    "WEIGHTS",
    "Step",
    "from_named",
    "gradients",
    "named_adjoints",
    "step",
    "to_named",
]

Params = list[dict[str, jax.Array]]
Batch = tuple[jax.Array, jax.Array]

SIZES = (2, 2, 2, 1)
# article name -> (layer list index, receiving node, sending node): params[l]["W"][to, frm]
WEIGHTS: dict[str, tuple[int, int, int]] = {
    "w1": (0, 0, 0),  # x1    -> h1 of layer 1
    "w2": (0, 0, 1),  # x2    -> h1 of layer 1
    "w3": (0, 1, 0),  # x1    -> h2 of layer 1
    "w4": (0, 1, 1),  # x2    -> h2 of layer 1
    "w5": (1, 0, 0),  # a¹_h1 -> h1 of layer 2
    "w6": (1, 0, 1),  # a¹_h2 -> h1 of layer 2
    "w7": (1, 1, 0),  # a¹_h1 -> h2 of layer 2
    "w8": (1, 1, 1),  # a¹_h2 -> h2 of layer 2
    "w9": (2, 0, 0),  # a²_h1 -> out
    "w10": (2, 0, 1),  # a²_h2 -> out
}
# bias name -> (layer list index, node): params[l]["b"][node]
BIASES: dict[str, tuple[int, int]] = {
    "b1_h1": (0, 0),
    "b1_h2": (0, 1),
    "b2_h1": (1, 0),
    "b2_h2": (1, 1),
    "b3_out": (2, 0),
}
NAMES: tuple[str, ...] = (*WEIGHTS, *BIASES)
_NODES = (("h1", "h2"), ("h1", "h2"), ("out",))


def to_named(params: Params) -> dict[str, jax.Array]:
    """The layer arrays as the article's scalars ``{"w1": …, "w10": …, "b1_h1": …, "b3_out": …}``.

    Works on parameters and on their gradients alike (same structure).
    """
    mlp.check_params("N1", params, SIZES)
    named = {k: params[layer]["W"][to, frm] for k, (layer, to, frm) in WEIGHTS.items()}
    named |= {k: params[layer]["b"][node] for k, (layer, node) in BIASES.items()}
    return named


def from_named(named: Mapping[str, Any]) -> Params:
    """The inverse of :func:`to_named`: fifteen scalars to the list of three layers."""
    if not isinstance(named, Mapping):
        raise UsageError(
            f"`named` must be a dict with keys {', '.join(NAMES)}, got {type(named).__name__}."
        )
    if set(named) != set(NAMES):
        missing = [k for k in NAMES if k not in named]
        extra = sorted(set(named) - set(NAMES))
        raise UsageError(
            f"`named` keys do not match N1's weights and biases. Missing: {missing}; "
            f"unexpected: {extra}. Expected exactly {', '.join(NAMES)}."
        )
    values = {k: jnp.asarray(v) for k, v in named.items()}
    for k, v in values.items():
        if v.shape != ():
            raise UsageError(f"`named[{k!r}]` has shape {v.shape}; each weight is a scalar.")
    params: Params = []
    for layer, (n_in, n_out) in enumerate(itertools.pairwise(SIZES)):
        # row-major order of W[to, from], then the nodes' biases in order
        w = sorted((to, frm, k) for k, (lay, to, frm) in WEIGHTS.items() if lay == layer)
        b = sorted((node, k) for k, (lay, node) in BIASES.items() if lay == layer)
        W = jnp.stack([values[k] for _, _, k in w]).reshape(n_out, n_in)
        params.append({"W": W, "b": jnp.stack([values[k] for _, k in b])})
    return params


def named_adjoints(adjoints: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    """Split N1's layer adjoints into the article's nodes: ``"z3_out"``, ``"a2_h1"``, …

    Each value has shape ``(m,)``: one entry per example of the batch.
    """
    out = {}
    for layer, nodes in enumerate(_NODES, start=1):
        for var in ("z", "a"):
            for j, node in enumerate(nodes):
                out[f"{var}{layer}_{node}"] = adjoints[f"{var}{layer}"][:, j]
    return out


def gradients(params: Params, batch: Batch) -> dict[str, jax.Array]:
    """The hand-written gradients in the article's names: ``{"w1": ∂L/∂w1, …}``."""
    return to_named(N1.backprop(params, batch).grads)


class Step(NamedTuple):
    """One gradient-descent step, as the article's section 5 tabulates it.

    Attributes:
      loss: L at the weights before the step.
      before: the weights and biases before the step, by name.
      gradients: ∂L/∂(each weight and bias), by name.
      after: ``before − learning_rate · gradients``, by name.
      params: ``after`` as the list of layer arrays, ready for the next step.
    """

    loss: jax.Array
    before: dict[str, jax.Array]
    gradients: dict[str, jax.Array]
    after: dict[str, jax.Array]
    params: Params


def step(params: Params, batch: Batch, learning_rate: float = 0.5) -> Step:
    """One step ``wᵢ ← wᵢ − α·∂L/∂wᵢ`` (α = 0.5 in the article), with the hand-written
    gradients."""
    check_positive("learning_rate", learning_rate)
    bp = N1.backprop(params, batch)
    new = jax.tree.map(lambda p, g: p - learning_rate * g, params, bp.grads)
    return Step(bp.loss, to_named(params), to_named(bp.grads), to_named(new), new)


def example(dtype: jnp.dtype = jnp.float32) -> tuple[Params, Batch]:
    """Chosen values (the article's were in lost images) that reproduce its 0.85049311458.

    x = (0.5, 1), t = 1; w1…w10 = 0.1, 0.2, …, 1.0; hidden biases 0.25; b3_out solved so
    that a³_out = 0.85049311458.
    """
    named = {f"w{i}": i / 10 for i in range(1, 11)}
    named |= dict.fromkeys(("b1_h1", "b1_h2", "b2_h1", "b2_h2"), 0.25)
    named["b3_out"] = 0.309768413658
    params = from_named({k: jnp.asarray(v, dtype) for k, v in named.items()})
    X = jnp.asarray([[0.5, 1.0]], dtype)
    Y = jnp.asarray([[1.0]], dtype)
    return params, (X, Y)


_NETWORK = mlp.make(
    SIZES,
    activation="sigmoid",
    loss="half_sse",
    model_id="N1",
    title="2-2-2-1 sigmoid network worked by hand, ½(t − a)² loss",
    source="002_1202722be9f6adaa.txt",
    doc="docs/models/N1.md",
)
N1: Model = dataclasses.replace(
    _NETWORK,
    example=example,
    leaf_names=to_named,  # the checker reports dL/dw1 ... dL/dw10
    extras={
        **_NETWORK.extras,
        "learning_rate": 0.5,  # the article's own numbers
        "predicted_output": 0.85049311458,
        "to_named": to_named,  # params or grads -> {"w1": ..., "b3_out": ...}
        "named_adjoints": named_adjoints,  # {"z3": ...} -> {"z3_out": ..., "a2_h1": ...}
    },
)

MODELS = (N1,)
