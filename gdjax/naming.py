"""Names for intermediate values: ``gd.name(x, "u")``, and the hooks that look through them.

A name is an identity in ordinary use. Tools see named values through one stack of
*hooks*, each a function ``hook(x, label) -> x`` applied by :func:`name` in the order the
hooks were pushed (outermost first):

* :func:`probing` adds a zero *probe* to chosen values; differentiating with respect to the
  probe gives autodiff's adjoint ``dL/du`` of an intermediate ``u`` without rewriting the
  model (:func:`probe_adjoints` does it in one call; the checker uses it);
* :func:`recording` collects every named value of one forward pass;
* the graph explainer (:mod:`gdjax.graph`) pushes a hook that marks the node in the jaxpr.

Models write their forward pass once, naming each intermediate as the document does::

    u = gd.name(b * c, "u")
    v = gd.name(a + u, "v")

Hooks act while a function is *traced*: a function that was ``jax.jit``-compiled outside the
block keeps its cached trace and does not see them.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["Hook", "hooked", "name", "probe_adjoints", "probing", "recording"]

Hook = Callable[[Any, str], Any]

_HOOKS: contextvars.ContextVar[tuple[Hook, ...]] = contextvars.ContextVar(
    "gdjax_name_hooks", default=()
)


def name(x: jax.Array, label: str) -> jax.Array:
    """Tag ``x`` with the name ``label`` and return it (unchanged unless a hook acts).

    Args:
      x: any array (or scalar) computed inside a model.
      label: the name a document gives this quantity, e.g. ``"u"`` or ``"z1"``.
    """
    if not isinstance(label, str) or not label:
        raise TypeError(f"gd.name: `label` must be a non-empty string, got {label!r}.")
    for hook in _HOOKS.get():
        x = hook(x, label)
    return x


@contextlib.contextmanager
def hooked(hook: Hook) -> Iterator[None]:
    """Within this block, :func:`name` also applies ``hook(x, label)`` (after outer hooks)."""
    token = _HOOKS.set((*_HOOKS.get(), hook))
    try:
        yield
    finally:
        _HOOKS.reset(token)


def active_hooks() -> tuple[Hook, ...]:
    """The hooks in force now, outermost first (empty outside every block)."""
    return _HOOKS.get()


@contextlib.contextmanager
def probing(probes: Mapping[str, Any]) -> Iterator[None]:
    """Within this block, ``name(x, k)`` returns ``x + probes[k]`` for each key ``k``.

    Differentiating a loss with respect to ``probes`` (all zeros) inside the block gives
    the adjoint of every named intermediate.
    """

    def add_probe(x: Any, label: str) -> Any:
        return x + probes[label] if label in probes else x

    with hooked(add_probe):
        yield


@contextlib.contextmanager
def recording() -> Iterator[dict[str, list[Any]]]:
    """Within this block, every ``name(x, label)`` appends ``x`` to ``store[label]``.

    Yields the store, a dict from label to the values named so (in call order).
    """
    store: dict[str, list[Any]] = {}

    def record(x: Any, label: str) -> Any:
        store.setdefault(label, []).append(x)
        return x

    with hooked(record):
        yield store


def probe_adjoints(
    loss: Callable[[Any, Any], Any], params: Any, batch: Any, like: Mapping[str, Any]
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
