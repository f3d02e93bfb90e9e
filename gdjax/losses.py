r"""Losses, written for stable numerics.

==========================  ===========================================================
``squared_error(p, y)``      :math:`\sum_i (p_i - y_i)^2`
``mean_squared_error(p, y)`` :math:`\frac1m \sum_i (p_i - y_i)^2` (R1–R4's ``(1/m)‖ŷ − y‖²``)
``half_squared_error(p, y)`` :math:`\tfrac12 \sum_i (y_i - p_i)^2` (N1's ``½(t − a)²``)
``bce_with_logits(z, y)``    :math:`-(y\log\sigma(z) + (1-y)\log(1-\sigma(z)))`, per example
==========================  ===========================================================

Cross-entropy takes the logit ``z``, not the probability ``a = σ(z)``: with
``log σ(z) = -softplus(-z)`` and ``log(1 - σ(z)) = -softplus(z)`` it stays finite, with a
finite gradient ``σ(z) - y``, at ``|z| = 1e4``, where ``log(σ(z))`` would give ``-inf``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = [
    "bce_with_logits",
    "half_squared_error",
    "mean_squared_error",
    "sigmoid",
    "squared_error",
]


def sigmoid(z: jax.Array) -> jax.Array:
    r""":math:`\sigma(z) = 1/(1 + e^{-z})`, exact in float32 at ``|z| = 1e4`` (0 or 1, no NaN)."""
    return jax.nn.sigmoid(z)


def squared_error(pred: jax.Array, y: jax.Array) -> jax.Array:
    r""":math:`\sum (p - y)^2` over every element."""
    return jnp.sum(jnp.square(pred - y))


def mean_squared_error(pred: jax.Array, y: jax.Array) -> jax.Array:
    r""":math:`\frac1m \|\hat y - y\|^2`, the mean over every element."""
    return jnp.mean(jnp.square(pred - y))


def half_squared_error(pred: jax.Array, y: jax.Array) -> jax.Array:
    r""":math:`\tfrac12 \sum (y - p)^2`: its gradient in ``p`` is ``p - y``."""
    return 0.5 * jnp.sum(jnp.square(y - pred))


def bce_with_logits(z: jax.Array, y: jax.Array) -> jax.Array:
    r"""Binary cross-entropy of labels ``y`` in [0, 1] given logits ``z``, elementwise.

    :math:`L = -(y \log \sigma(z) + (1 - y)\log(1 - \sigma(z)))
    = y\,\mathrm{softplus}(-z) + (1 - y)\,\mathrm{softplus}(z)`, and
    :math:`\partial L / \partial z = \sigma(z) - y`.
    """
    return -(y * jax.nn.log_sigmoid(z) + (1 - y) * jax.nn.log_sigmoid(-z))
