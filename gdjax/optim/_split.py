"""Hyperparameters as data: a rule's numbers are pytree leaves, its choices are static.

Every rule of :mod:`gdjax.optim` (``gd``, ``sgd``, ``adam``, ...) returns a :class:`Rule`:
an ``optax.GradientTransformationExtraArgs`` that also remembers how it was built, the
rule's function and its arguments. :func:`partition` splits it into

* the *static* part: the function and its non-numeric arguments (``nesterov``, a dtype,
  a schedule function, a mask), hashable and compared by value, the compile key;
* the *leaves*: its numeric arguments (learning rate, β's, eps, weight decay) as arrays.

:func:`combine` rebuilds the rule from the two, inside a compiled program with traced
leaves (every rule takes traced scalars). So ``gd.fit`` passes the leaves as arguments and
a new learning rate runs the same executable. Any other transformation (optax's own, an
``optax.chain``) is one static object, compared by identity, with no leaves.

A rule built with 1-D arrays (``gd.optim.sgd(jnp.logspace(-3, 0, 64))``) holds K settings:
each concrete element is checked as a scalar would be, :func:`num_settings` says K, and
``gd.sweep`` (or ``jax.vmap`` over its leaves) runs them; its own ``init``/``update``
refuse to run.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gdjax._validate import UsageError

__all__ = ["Rule", "combine", "num_settings", "partition", "rule", "settings"]


class Rule(optax.GradientTransformationExtraArgs):
    """A ``gd.optim`` rule: ``init``/``update`` as optax's, plus how it was built.

    Attributes (besides the two functions): ``name`` (the rule's function name),
    ``hyperparams`` (name -> array, the numeric arguments) and ``static`` (the rest).
    """

    name: str
    hyperparams: dict[str, jax.Array]
    static: Any

    def replace(self, **changes: Any) -> Rule:
        """The same rule with some arguments changed, e.g. ``opt.replace(learning_rate=0.01)``."""
        return self.static.build({**self.hyperparams, **changes})


class _Static:
    """The static part of a rule: its function and non-numeric arguments (hashable)."""

    __slots__ = ("fn", "items", "key")

    def __init__(self, fn: Callable, items: tuple[tuple[str, Any], ...]):
        self.fn, self.items = fn, items
        self.key = (fn, tuple((k, _hashable(v)) for k, v in items))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Static) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={_describe(v)}" for k, v in self.items)
        return f"gd.optim.{self.fn.__name__}({args})"

    def build(self, leaves: dict[str, Any]) -> Any:
        return self.fn(**dict(self.items), **leaves)


class _Whole:
    """Any other transformation as a static part: compared and hashed by identity."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any):
        self.obj = obj

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Whole) and other.obj is self.obj

    def __hash__(self) -> int:
        return id(self.obj)

    def __repr__(self) -> str:
        return f"{type(self.obj).__module__}.{type(self.obj).__qualname__} (opaque)"


class _ById:
    __slots__ = ("obj",)

    def __init__(self, obj: Any):
        self.obj = obj

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _ById) and other.obj is self.obj

    def __hash__(self) -> int:
        return id(self.obj)


def _hashable(v: Any) -> Any:
    try:
        hash(v)
    except TypeError:
        return _ById(v)
    return v


def _describe(v: Any) -> str:
    if callable(v):
        return getattr(v, "__qualname__", type(v).__name__)
    return repr(v)


def _is_number(v: Any) -> bool:
    if isinstance(v, bool | np.bool_) or v is None or callable(v):
        return False
    if isinstance(v, int | float | np.integer | np.floating):
        return True
    dtype = getattr(v, "dtype", None)
    return (
        dtype is not None
        and (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer))
        and np.ndim(v) <= 1
    )


def _as_leaf(v: Any) -> jax.Array:
    if isinstance(v, jax.core.Tracer):
        return v
    if np.ndim(v) == 0:
        return jnp.asarray(float(v)) if not hasattr(v, "dtype") else _float(jnp.asarray(v))
    return _float(jnp.asarray(v))


def _float(x: jax.Array) -> jax.Array:
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.result_type(float))


def _refusing(k: int, name: str) -> Callable:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise UsageError(
            f"gd.optim.{name} holds {k} settings of its hyperparameters; it runs inside "
            f"gd.sweep (or under jax.vmap over its leaves), not on its own. For one run, "
            f"build it with scalars."
        )

    return refuse


def rule(fn: Callable[..., optax.GradientTransformation]) -> Callable[..., Rule]:
    """Make a rule function return a :class:`Rule` (numbers as leaves, the rest static)."""
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def build(*args: Any, **kwargs: Any) -> Rule:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        leaves = {k: _as_leaf(v) for k, v in bound.arguments.items() if _is_number(v)}
        static = _Static(
            build, tuple((k, v) for k, v in bound.arguments.items() if k not in leaves)
        )
        k = settings_count(leaves)
        if k is None:
            inner = fn(**bound.arguments)  # as given: Python numbers stay Python numbers
            init, update = inner.init, inner.update
            if not isinstance(inner, optax.GradientTransformationExtraArgs):
                update = _extra_args(inner.update)
        else:
            _check_each(fn, static, leaves, k)
            init = update = _refusing(k, fn.__name__)
        out = Rule(init, update)
        out.name, out.hyperparams, out.static = fn.__name__, leaves, static
        return out

    return build


def _extra_args(update: Callable) -> Callable:
    def with_extra(updates, state, params=None, **extra_args):
        del extra_args
        return update(updates, state, params)

    return with_extra


def settings_count(leaves: dict[str, Any]) -> int | None:
    """K when some leaves are 1-D of length K (all such must agree), else None."""
    sizes = {k: int(np.shape(v)[0]) for k, v in leaves.items() if np.ndim(v) == 1}
    if not sizes:
        return None
    if len(set(sizes.values())) > 1:
        raise UsageError(
            f"hyperparameter arrays of different lengths: {sizes}; pass arrays of one "
            f"length K (setting i takes element i of each), e.g. from gd.train.grid."
        )
    if 0 in sizes.values():
        raise UsageError(f"hyperparameter arrays must not be empty, got {sizes}.")
    return next(iter(sizes.values()))


def _check_each(fn: Callable, static: _Static, leaves: dict[str, Any], k: int) -> None:
    """Build setting ``i`` with concrete scalars, so each is checked as a scalar is."""
    host = {n: np.asarray(v) for n, v in leaves.items()}
    for i in range(k):
        one = {n: (v[i] if v.ndim else v).item() for n, v in host.items()}
        try:
            fn(**dict(static.items), **one)
        except (ValueError, TypeError) as err:
            batched = [n for n, v in host.items() if v.ndim]
            at = ", ".join(f"{n}[{i}] = {one[n]!r}" for n in batched)
            raise UsageError(
                f"gd.optim.{fn.__name__}: setting {i} ({at}) is refused: {err}"
            ) from None


def partition(opt: Any) -> tuple[Any, Any]:
    """``(static, leaves)`` of an optimizer; see the module docstring."""
    if isinstance(opt, Rule):
        return opt.static, dict(opt.hyperparams)
    return _Whole(opt), ()


def combine(static: Any, leaves: Any) -> Any:
    """The optimizer with these leaves (possibly traced): the inverse of :func:`partition`."""
    if isinstance(static, _Whole):
        return static.obj
    return static.build(leaves)


def num_settings(opt: Any) -> int | None:
    """K for a rule built with 1-D arrays of K settings, else None."""
    return settings_count(opt.hyperparams) if isinstance(opt, Rule) else None


def settings(opt: Any) -> dict[str, jax.Array]:
    """The swept hyperparameters of a K-setting rule, name -> ``(K,)`` (scalars broadcast
    only where another argument is swept)."""
    if not isinstance(opt, Rule) or num_settings(opt) is None:
        return {}
    return {n: v for n, v in opt.hyperparams.items() if np.ndim(v) == 1}
