"""A sweep's settings: the product grid, and the optimizer split into K settings."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gdjax import optim
from gdjax._validate import UsageError, check_finite
from gdjax.optim._split import is_rule_function
from gdjax.train.factory import Factory
from gdjax.train.planner import remember

__all__ = ["grid", "optimizer_parts"]


def grid(**axes: Any) -> dict[str, jax.Array]:
    """The Cartesian product of 1-D hyperparameter axes, flattened for :func:`sweep`.

    >>> grid(learning_rate=[0.1, 0.01], b1=[0.9, 0.99])["b1"]
    Array([0.9 , 0.99, 0.9 , 0.99], dtype=float32)

    The last axis varies fastest (``itertools.product`` order).
    """
    if not axes:
        raise UsageError("grid: pass at least one axis, e.g. grid(learning_rate=[0.1, 0.01]).")
    values = {}
    for name, v in axes.items():
        arr = np.asarray(v)
        if arr.ndim != 1 or arr.size == 0:
            raise UsageError(f"grid: `{name}` must be a non-empty 1-D sequence, got {v!r}.")
        values[name] = arr
    rows = list(itertools.product(*values.values()))
    return {
        name: jnp.asarray(np.array([r[i] for r in rows], dtype=values[name].dtype))
        for i, name in enumerate(values)
    }


def _settings(learning_rates, hyperparams, finite: bool = True) -> dict[str, jax.Array]:
    """The named 1-D settings, of one length K (checked finite unless ``finite`` is False:
    a rule function checks its elements itself)."""
    if learning_rates is not None and hyperparams is not None:
        if "learning_rate" in hyperparams:
            raise UsageError(
                "Pass the learning rates once: either `learning_rates` or "
                "hyperparams['learning_rate'], not both."
            )
        hyperparams = {"learning_rate": learning_rates, **hyperparams}
    elif learning_rates is not None:
        hyperparams = {"learning_rate": learning_rates}
    elif hyperparams is None:
        raise UsageError(
            "sweep: with an optimizer factory, pass `learning_rates=[...]` or "
            "`hyperparams={name: [...]}` (see gd.train.grid); or pass a gd.optim rule "
            "built with arrays, e.g. gd.optim.sgd(jnp.logspace(-3, 0, 64))."
        )
    if not isinstance(hyperparams, Mapping) or not hyperparams:
        raise UsageError("`hyperparams` must be a non-empty dict name -> 1-D array.")
    settings: dict[str, jax.Array] = {}
    for name, v in hyperparams.items():
        arr = jnp.asarray(v)
        if arr.ndim != 1 or arr.shape[0] == 0:
            raise UsageError(
                f"hyperparameter `{name}` must be a non-empty 1-D array, got shape {arr.shape}."
            )
        if finite:
            check_finite(f"hyperparams[{name!r}]", arr)
        settings[name] = arr
    sizes = {n: a.shape[0] for n, a in settings.items()}
    if len(set(sizes.values())) > 1:
        raise UsageError(
            f"Hyperparameter arrays must all have the same length K (settings are zipped), "
            f"got {sizes}. Use gd.train.grid(...) for a product grid."
        )
    return settings


def optimizer_parts(optimizer, learning_rates, hyperparams):
    """(static part, leaves with a leading axis K, named settings, K) of the sweep's optimizer.

    A ``gd.optim`` rule built with 1-D arrays, or a ``gd.optim.chain`` of such rules (its
    settings named ``"adam.learning_rate"``, member then argument), is split by
    :func:`gdjax.optim.partition`. A rule function as the factory (``gd.optim.sgd``) is
    called once with the K settings and split the same way (its elements checked at once,
    1,024 learning rates in ~50 µs instead of ~25 ms). Any other factory is called once
    per concrete setting so that each is checked as ``fit`` checks its optimizer, then
    inside the program with the traced settings.
    """
    if optim.num_settings(optimizer) is not None:
        if learning_rates is not None or hyperparams is not None:
            raise UsageError(
                "sweep: the optimizer already holds its settings; do not also pass "
                "`learning_rates`/`hyperparams`."
            )
        k = optim.num_settings(optimizer)
        static, leaves = optim.partition(optimizer)
        leaves = jax.tree_util.tree_map(
            lambda x: np.broadcast_to(np.asarray(x), (k,)) if np.ndim(x) == 0 else x, leaves
        )
        return static, leaves, optim.settings(optimizer), k
    if hasattr(optimizer, "update") or not callable(optimizer):
        raise UsageError(
            "sweep: `optimizer` must be a gd.optim rule built with arrays of settings (e.g. "
            "gd.optim.sgd(jnp.logspace(-3, 0, 64))), a gd.optim.chain of such rules, or a "
            "factory of hyperparameters (e.g. gd.optim.sgd, or lambda learning_rate: "
            "optax.adam(learning_rate))."
        )
    rule_fn = is_rule_function(optimizer)
    settings = _settings(learning_rates, hyperparams, finite=not rule_fn)
    k = next(iter(settings.values())).shape[0]
    if rule_fn:  # one rule of K settings, its elements checked at once
        try:
            static, leaves = optim.partition(optimizer(**settings))
        except (ValueError, TypeError):
            pass  # refused: the loop below names the first setting refused
        else:
            return static, leaves, settings, k
    factory = Factory(optimizer)
    # the same factory on the same (immutable) arrays was checked before: not again
    seen = (factory, tuple((n, id(v)) for n, v in settings.items()))
    if seen not in _CHECKED:
        host = {n: np.asarray(v) for n, v in settings.items()}
        for i in range(k):
            try:
                optimizer(**{n: v[i].item() for n, v in host.items()})
            except (ValueError, TypeError) as err:
                setting = ", ".join(f"{n}={v[i].item():g}" for n, v in host.items())
                raise UsageError(f"sweep: setting {i} ({setting}) is refused: {err}") from None
        remember(_CHECKED, seen, tuple(settings.values()), limit=64)  # held: ids stay theirs
    return factory, settings, settings, k


#: (factory, ids of its settings arrays) whose every setting passed: -> the arrays
_CHECKED: dict[tuple, tuple] = {}
