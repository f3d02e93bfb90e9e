r"""Gradient clipping by the global norm, as a ``gd.optim`` rule (its threshold a leaf).

.. math::
    \|g\| = \sqrt{\textstyle\sum_{\text{leaves } \ell} \sum_j |g_{\ell j}|^2}, \qquad
    u = \begin{cases} g & \|g\| < c \\ c \cdot g / \|g\| & \text{otherwise} \end{cases}

(Pascanu, Mikolov & Bengio, "On the difficulty of training recurrent neural networks",
2013), with :math:`c` = ``max_norm``. The norm is summed leaf by leaf in the order of the
pytree and the clipped update formed as :math:`(g / \|g\|)\cdot c`, the order optax's
``clip_by_global_norm`` uses, so the two agree bit for bit. It is meant as the first
member of :func:`gdjax.optim.chain`, ahead of an update rule.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gdjax.optim._split import POSITIVE, Rule, make, register
from gdjax.optim._util import Scalar, abs_sq, cast, check_eps, check_state

__all__ = ["ClipState", "clip_by_global_norm", "global_norm"]


class ClipState(NamedTuple):
    """Clipping keeps nothing between steps."""


def global_norm(tree: Any) -> jax.Array:
    r""":math:`\sqrt{\sum_\ell \sum_j |x_{\ell j}|^2}` over every leaf of ``tree``."""
    total = 0
    for leaf in jax.tree.leaves(tree):
        total = total + jnp.sum(abs_sq(leaf))
    return jnp.sqrt(jnp.asarray(total))


def _clip_transform(max_norm: Scalar) -> optax.GradientTransformation:
    check_eps("max_norm", max_norm)

    def init(params: Any) -> ClipState:
        del params
        return ClipState()

    def update(updates: Any, state: ClipState, params: Any = None):
        del params
        check_state(state, ClipState, "clip_by_global_norm")
        norm = global_norm(updates)
        keep = norm < cast(max_norm, norm)

        def clip(g):
            return jnp.where(keep, g, (g / norm.astype(g.dtype)) * cast(max_norm, g))

        return jax.tree.map(clip, updates), state

    return optax.GradientTransformation(init, update)


def clip_by_global_norm(max_norm: Scalar) -> Rule:
    r"""Scale the whole update down to global norm ``max_norm`` when it is longer:
    :math:`u = g \cdot \min(1, c / \|g\|)`.

    ``max_norm`` (:math:`c > 0`) is a leaf like a learning rate: a new threshold does not
    compile again, and a 1-D array of K thresholds is swept. optax's counterpart:
    ``optax.clip_by_global_norm``.
    """
    return make("clip_by_global_norm", **locals())  # the arguments, as given


register("clip_by_global_norm", _clip_transform, {"max_norm": POSITIVE}, clip_by_global_norm)
