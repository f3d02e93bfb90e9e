r"""Hyperparameters as pytree leaves: conversion, element-wise checks, settings counts.

Shared by the rules (:mod:`gdjax.optim.rule`) and the schedules. A numeric hyperparameter
becomes a float array leaf: a Python number an array of JAX's default float dtype
(float32, float64 under x64), an array or a tracer keeps its float dtype (an integer one
is cast to the default float). A 1-D leaf of length K makes the object one of K settings,
which :func:`jax.vmap` runs side by side; every other leaf is then broadcast to ``(K,)``.
Whatever is not a number (a flag, a dtype, a mask, a user's own schedule function) is
static: kept in the pytree's aux data in a hashable form (:func:`freeze`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gdjax._validate import UsageError, check_positive, check_scalar, is_concrete

__all__ = [
    "ById",
    "Frozen",
    "as_leaf",
    "broadcast_settings",
    "check_elements",
    "check_one_setting",
    "check_user_schedule",
    "complement",
    "freeze",
    "path_name",
    "settings_count",
    "show",
    "thaw",
]


class ById:
    """A static value compared and hashed by identity (a function, an unhashable object)."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ById) and other.obj is self.obj

    def __hash__(self) -> int:
        return id(self.obj)

    def __repr__(self) -> str:
        return f"ById({getattr(self.obj, '__name__', self.obj)!r})"


class Frozen:
    """A pytree of Python bools (e.g. a weight-decay mask), compared by structure and values."""

    __slots__ = ("key", "value")

    def __init__(self, value: Any) -> None:
        leaves, treedef = jax.tree.flatten(value)
        self.value, self.key = value, (treedef, tuple(bool(x) for x in leaves))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Frozen) and other.key == self.key

    def __hash__(self) -> int:
        return hash(self.key[1])

    def __repr__(self) -> str:
        return repr(self.value)


def freeze(value: Any) -> Any:
    """``value`` in a hashable form that compares as a jit cache key should."""
    if callable(value) and not isinstance(value, type):
        return ById(value)  # a function: only itself is itself
    try:
        hash(value)
        return value  # None, bools, strings, dtypes
    except TypeError:
        pass
    leaves = jax.tree.leaves(value)
    if leaves and all(isinstance(x, bool | np.bool_) for x in leaves):
        return Frozen(value)
    return ById(value)


def thaw(value: Any) -> Any:
    """The value that :func:`freeze` wrapped."""
    if isinstance(value, ById | Frozen):
        return value.obj if isinstance(value, ById) else value.value
    return value


def default_float() -> np.dtype:
    """float32, or float64 where x64 is on (JAX's canonical dtype of a Python float)."""
    return np.dtype(jax.dtypes.canonicalize_dtype(np.float64))


def as_leaf(arg: str, value: Any) -> Any:
    """``value`` as a float leaf of shape ``()`` or ``(K,)``, refusing anything else."""
    if isinstance(value, list | tuple):
        raise UsageError(
            f"`{arg}` must be a number or an array, got a {type(value).__name__}. For K "
            f"settings pass a 1-D array, e.g. {arg}=jnp.asarray({list(value)!r})."
        )
    ndim = np.ndim(value)
    if ndim == 0:
        check_scalar(arg, value)
    elif ndim > 1 or not isinstance(value, np.ndarray | jax.Array):
        raise UsageError(
            f"`{arg}` must be a scalar, or a 1-D array of K settings (run together by "
            f"gd.sweep or jax.vmap); got an array of shape {np.shape(value)}."
        )
    elif np.shape(value)[0] == 0:
        raise UsageError(f"`{arg}` is an empty array: give at least one setting.")
    elif not (
        jnp.issubdtype(value.dtype, jnp.floating) or jnp.issubdtype(value.dtype, jnp.integer)
    ):
        raise UsageError(f"`{arg}` must hold real numbers, got dtype {value.dtype}.")
    if isinstance(value, int | float):
        return np.asarray(value, default_float())
    if isinstance(value, np.generic | np.ndarray):
        value = np.asarray(value)
    if jnp.issubdtype(value.dtype, jnp.floating):
        return value
    return value.astype(default_float())


def complement(value: Any, leaf: Any) -> Any:
    """``1 − β`` as a leaf like ``leaf``: from the caller's Python number when there is one
    (rounded once, as optax has it), else in the array's own dtype."""
    if isinstance(value, int | float):
        return np.asarray(1 - value, leaf.dtype)
    return 1 - leaf


def check_elements(arg: str, leaf: Any, check: Callable[[str, Any], None]) -> None:
    """``check(name, scalar)`` on a concrete scalar leaf, or on the elements of a 1-D one
    that decide it.

    Every check of a hyperparameter is an interval (positive, non-negative, in [0, 1),
    finite), so a 1-D leaf passes exactly when its first non-finite element (if any), its
    smallest and its largest pass: three checks, not K, and the error names the element.
    """
    if not is_concrete(leaf):
        return
    if np.ndim(leaf) == 0:
        check(arg, leaf)
        return
    values = np.asarray(leaf)
    finite = np.isfinite(values)
    if finite.all():  # the common case
        picks = [int(values.argmin()), int(values.argmax())]
    else:
        picks = np.flatnonzero(~finite)[:1].tolist()
        if finite.any():
            masked = np.where(finite, values, np.nan)
            picks += [int(np.nanargmin(masked)), int(np.nanargmax(masked))]
    for i in dict.fromkeys(picks):
        check(f"{arg}[{i}]", values[i])


def path_name(path: tuple) -> str:
    """A leaf's key path as an argument name: ``learning_rate.init_value``, ``scales[100]``."""
    out = ""
    for k in path:
        if isinstance(k, jax.tree_util.GetAttrKey):
            continue  # the container's own attribute (hyperparams, complements)
        key = getattr(k, "key", getattr(k, "idx", k))
        out += f"[{key}]" if isinstance(key, int) else (f".{key}" if out else str(key))
    return out


def settings_count(tree: Any) -> int | None:
    """The common length K of ``tree``'s 1-D leaves, None when all are scalars.

    Refuses two leaves of different lengths, naming both.
    """
    first = None
    is_schedule = lambda x: hasattr(x, "kind") and hasattr(x, "values")  # noqa: E731
    if all(np.ndim(x) == 0 for x in jax.tree.leaves(tree)):  # one setting: no paths to name
        return None
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_schedule)[0]:
        if is_schedule(leaf):  # one unit, named as the argument it is (its K is checked)
            leaf = next((x for x in jax.tree.leaves(leaf) if np.ndim(x) != 0), np.zeros(()))
        if np.ndim(leaf) == 0:
            continue
        k = np.shape(leaf)[0]
        if first is None:
            first = (path_name(path), k)
        elif k != first[1]:
            raise UsageError(
                f"`{first[0]}` has {first[1]} settings but `{path_name(path)}` has {k}: every "
                f"1-D hyperparameter of one optimizer must have the same length K (a sweep "
                f"over a grid: gd.train.grid, then one array per argument)."
            )
    return None if first is None else first[1]


def broadcast_settings(tree: Any, k: int | None) -> Any:
    """Every scalar leaf of ``tree`` broadcast to ``(k,)`` (unchanged when ``k`` is None)."""
    if k is None:
        return tree

    def widen(leaf):
        if np.ndim(leaf) == 1:
            return leaf
        if isinstance(leaf, np.ndarray):
            return np.full((k,), leaf, leaf.dtype)
        return jnp.broadcast_to(leaf, (k,))

    return jax.tree.map(widen, tree)


def check_one_setting(tree: Any, what: str) -> None:
    """Raise unless every leaf is a scalar: K settings run under vmap, not one by one."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if np.ndim(leaf) != 0:
            raise UsageError(
                f"this {what} holds {np.shape(leaf)[0]} settings (`{path_name(path)}` has "
                f"shape {np.shape(leaf)}), so it cannot run on its own. Run them together "
                f"with gd.sweep, or jax.vmap a function of it over axis 0, e.g. "
                f"jax.vmap(run, in_axes=(0, None))(opt, params); take one setting with "
                f"gd.optim.setting(opt, i)."
            )


def show(v: Any) -> str:
    """A hyperparameter for a repr: ``0.001``, ``[0.1, 0.2]``, a function's name."""
    if isinstance(v, np.ndarray | jax.Array) and is_concrete(v) and np.ndim(v) <= 1:
        a = np.asarray(v, np.float64)
        return f"{float(a):g}" if a.ndim == 0 else f"[{', '.join(f'{x:g}' for x in a)}]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k!r}: {show(x)}" for k, x in v.items()) + "}"
    if isinstance(v, tuple):
        return "(" + ", ".join(show(x) for x in v) + ("," if len(v) == 1 else "") + ")"
    if callable(v) and not isinstance(v, type) and not hasattr(v, "kind"):
        return getattr(v, "__qualname__", type(v).__name__)
    return repr(v)


def check_user_schedule(arg: str, fn: Callable[[Any], Any]) -> None:
    """A user's schedule, evaluated at step 0: refused if that value is concrete and bad.

    Only ``t = 0`` is looked at (a later negative value cannot be seen), and a schedule
    that closes over a traced value gives a traced value, which passes.
    """
    try:
        with jax.ensure_compile_time_eval():  # concrete even while an outer jit traces
            value = fn(jnp.zeros((), jnp.int32))
    except UsageError:
        raise
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerBoolConversionError):
        return  # it needs a traced value it closes over: it cannot be looked at now
    except Exception as err:  # the user's own function failed: say where
        raise UsageError(
            f"`{arg}` is a schedule function that raised {type(err).__name__} at step 0 "
            f"({err}); a schedule takes the step count t (an int32 array) and returns a scalar."
        ) from None
    if not is_concrete(value):
        return
    check_scalar(f"{arg}(0)", value)
    check_positive(f"{arg}(0)", value, allow_zero=True)
