"""Names for intermediate values: ``gd.name(x, "u")``.

A name is an identity in ordinary use. Two tools look through it:

* the derivation checker (:mod:`gdjax.check`) adds a zero *probe* to every named value
  and differentiates with respect to the probe, which gives autodiff's adjoint
  ``dL/du`` of an intermediate ``u`` without rewriting the model;
* the graph explainer (:mod:`gdjax.trace`) labels the node that holds the value.

Models write their forward pass once, naming each intermediate as the document does::

    u = gd.name(b * c, "u")
    v = gd.name(a + u, "v")
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["name", "probe_adjoints", "probing"]

_PROBES: contextvars.ContextVar[Mapping[str, Any] | None] = contextvars.ContextVar(
    "gdjax_probes", default=None
)
# Set by gdjax.trace while it traces a function: called as hook(x, label) -> x.
_TRACE_HOOK: contextvars.ContextVar[Any] = contextvars.ContextVar("gdjax_trace_hook", default=None)


def name(x: jax.Array, label: str) -> jax.Array:
    """Tag ``x`` with the name ``label`` and return it unchanged.

    Args:
      x: any array (or scalar) computed inside a model.
      label: the name a document gives this quantity, e.g. ``"u"``, ``"dz"``'s ``"z"``.

    Returns:
      ``x`` itself, plus a zero probe while :func:`probing` is active for ``label``.
    """
    if not isinstance(label, str) or not label:
        raise TypeError(f"gd.name: `label` must be a non-empty string, got {label!r}.")
    probes = _PROBES.get()
    if probes is not None and label in probes:
        x = x + probes[label]
    hook = _TRACE_HOOK.get()
    if hook is not None:
        x = hook(x, label)
    return x


@contextlib.contextmanager
def probing(probes: Mapping[str, Any]) -> Iterator[None]:
    """Within this block, ``name(x, k)`` returns ``x + probes[k]`` for each key ``k``.

    Differentiating a loss with respect to ``probes`` (all zeros) inside the block gives
    the adjoint of every named intermediate. The function must be traced inside the
    block: a function that was already ``jax.jit``-compiled outside it keeps its cache.
    """
    token = _PROBES.set(probes)
    try:
        yield
    finally:
        _PROBES.reset(token)


def probe_adjoints(
    loss: Any, params: Any, batch: Any, like: Mapping[str, Any]
) -> dict[str, jax.Array]:
    """Autodiff's ``dL/du`` for each named intermediate ``u`` in ``like``.

    ``like`` maps each name to an array of the intermediate's shape and dtype (e.g. the
    hand-written backprop's adjoints); the loss is differentiated with respect to a zero
    probe of that shape added to the named value.
    """

    def loss_of_probes(probes: Mapping[str, Any]) -> jax.Array:
        with probing(probes):
            return loss(params, batch)

    return jax.grad(loss_of_probes)({k: jnp.zeros_like(v) for k, v in like.items()})
