"""Input validation shared by the whole package: the one place for every check.

Every check raises :class:`UsageError` (both a ``ValueError`` and a ``TypeError``, so
``except ValueError`` and ``except TypeError`` both catch it) whose message names the
argument and says how to fix the call, before any XLA trace is shown. Checks only look
at concrete values: under ``jit``/``vmap`` a traced value passes through untouched.

One rule for seeds: wherever gdjax takes a ``key``, an int seed ``s`` in [0, 2³²) is
accepted and means ``jax.random.key(s)`` (:func:`as_key`).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "UsageError",
    "as_key",
    "check_bool",
    "check_choice",
    "check_finite",
    "check_in_range",
    "check_int",
    "check_positive",
    "check_same_structure",
    "check_scalar",
    "check_shape",
    "is_concrete",
]


class UsageError(ValueError, TypeError):
    """Bad input to a gdjax call: the message names the argument and says the fix.

    The command line prints it as one line and exits with status 2.
    """


def is_concrete(x: Any) -> bool:
    """True when ``x`` holds a value now (not a tracer inside jit/vmap/grad)."""
    return not isinstance(x, jax.core.Tracer)


def _leaves_with_paths(tree: Any) -> list[tuple[str, Any]]:
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [(jax.tree_util.keystr(path), leaf) for path, leaf in leaves]


@jax.jit
def _all_finite_each(leaves: list[jax.Array]) -> jax.Array:
    return jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])


def check_finite(arg: str, tree: Any) -> None:
    """Raise if any concrete leaf of ``tree`` holds NaN or ±inf.

    Device arrays are checked on the device (one small compiled reduction, no copy to
    the host); the count of bad values is only computed for the message.
    """
    paths, on_device = [], []
    for path, leaf in _leaves_with_paths(tree):
        if leaf is None or not is_concrete(leaf) or callable(leaf):
            continue
        if isinstance(leaf, jax.Array):
            if jnp.issubdtype(leaf.dtype, jnp.inexact):
                paths.append(path)
                on_device.append(leaf)
            continue
        arr = np.asarray(leaf)
        if arr.dtype.kind in "fc" and not np.all(np.isfinite(arr)):
            _non_finite(arg, path, arr)
    if on_device:
        with jax.ensure_compile_time_eval():  # concrete even while an outer jit traces
            flags = np.asarray(_all_finite_each(on_device))
        for path, leaf, ok in zip(paths, on_device, flags):
            if not ok:
                _non_finite(arg, path, np.asarray(leaf))


def _non_finite(arg: str, path: str, arr: np.ndarray) -> None:
    bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
    raise UsageError(
        f"`{arg}{path}` holds {bad} non-finite value(s) (NaN or inf). "
        f"Clean or impute the data before passing it, e.g. drop rows with "
        f"np.isnan(x).any(axis=1)."
    )


def check_same_structure(arg: str, tree: Any, ref: Any, ref_name: str) -> None:
    """Raise if ``tree`` and ``ref`` differ in pytree structure or leaf shapes."""
    s1, s2 = jax.tree_util.tree_structure(tree), jax.tree_util.tree_structure(ref)
    if s1 != s2:
        raise UsageError(
            f"`{arg}` does not have the same structure as {ref_name}.\n"
            f"  {arg}: {s1}\n  {ref_name}: {s2}\n"
            f"Pass a pytree with the same keys/nesting as {ref_name}."
        )
    for (path, a), (_, b) in zip(_leaves_with_paths(tree), _leaves_with_paths(ref)):
        if jnp.shape(a) != jnp.shape(b):
            raise UsageError(
                f"`{arg}{path}` has shape {jnp.shape(a)} but {ref_name}{path} has shape "
                f"{jnp.shape(b)}. Pass arrays of matching shapes."
            )


def check_shape(arg: str, x: Any, shape: tuple[int | None, ...], hint: str = "") -> None:
    """Raise if ``x``'s shape does not match ``shape`` (``None`` matches any size)."""
    got = jnp.shape(x)
    ok = len(got) == len(shape) and all(s is None or s == g for s, g in zip(shape, got))
    if not ok:
        want = "(" + ", ".join("any" if s is None else str(s) for s in shape) + ")"
        raise UsageError(
            f"`{arg}` has shape {got}, expected {want}." + (f" {hint}" if hint else "")
        )


def check_positive(arg: str, value: Any, *, allow_zero: bool = False) -> None:
    """Raise if a concrete scalar ``value`` is not a positive finite number."""
    if callable(value) or not is_concrete(value):
        return
    try:
        v = float(np.asarray(value))
    except (TypeError, ValueError):
        raise UsageError(f"`{arg}` must be a number, got {value!r}.") from None
    if not np.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        need = "a non-negative" if allow_zero else "a positive"
        raise UsageError(f"`{arg}` must be {need} finite number, got {v!r}.")


def check_in_range(arg: str, value: Any, lo: float, hi: float, *, hi_open: bool = True) -> None:
    """Raise if a concrete scalar ``value`` lies outside [lo, hi) (or [lo, hi])."""
    if callable(value) or not is_concrete(value):
        return
    v = float(np.asarray(value))
    ok = lo <= v < hi if hi_open else lo <= v <= hi
    if not ok:
        interval = f"[{lo}, {hi})" if hi_open else f"[{lo}, {hi}]"
        raise UsageError(f"`{arg}` must lie in {interval}, got {v!r}.")


def check_int(arg: str, value: Any, *, minimum: int | None = 1, what: str = "an int") -> int:
    """``value`` as an int, refusing bools, floats and values below ``minimum``."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
        raise UsageError(f"`{arg}` must be {what}, got {value!r}.")
    if minimum is not None and value < minimum:
        raise UsageError(f"`{arg}` must be {what} >= {minimum}, got {int(value)}.")
    return int(value)


def check_bool(arg: str, value: Any) -> bool:
    if not isinstance(value, bool | np.bool_):
        raise UsageError(f"`{arg}` must be True or False, got {value!r}.")
    return bool(value)


def check_choice(arg: str, value: Any, choices: Sequence[Any]) -> Any:
    if not isinstance(value, Hashable) or value not in choices:
        options = ", ".join(repr(c) for c in choices)
        raise UsageError(f"`{arg}` must be one of {options}; got {value!r}.")
    return value


def check_scalar(arg: str, value: Any) -> None:
    """Raise unless ``value`` is a real scalar (a Python number or a 0-d array/tracer)."""
    if isinstance(value, bool | np.bool_ | str):
        raise UsageError(f"`{arg}` must be a number, got {value!r}.")
    if isinstance(value, float | int | np.floating | np.integer):
        return  # a real scalar on its face (the common case: no dtype lattice to consult)
    try:  # an array's (or tracer's) own dtype; anything else through JAX's lattice
        dtype = value.dtype if isinstance(value, np.ndarray | jax.Array) else jnp.result_type(value)
    except TypeError:
        raise UsageError(f"`{arg}` must be a number or a JAX scalar, got {value!r}.") from None
    if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
        raise UsageError(f"`{arg}` must be a real number, got dtype {dtype}.")
    if np.ndim(value) != 0:
        raise UsageError(
            f"`{arg}` must be a scalar, got an array of shape {np.shape(value)}. To run "
            f"several values at once, use gd.sweep (or jax.vmap a function that builds it)."
        )


_SEED_LIMIT = 2**32


def as_key(key: Any, arg: str = "key") -> jax.Array:
    """A ``jax.random`` key from a key (new-style or raw uint32) or an int seed."""
    if isinstance(key, int | np.integer) and not isinstance(key, bool | np.bool_):
        if not 0 <= key < _SEED_LIMIT:
            raise UsageError(
                f"`{arg}` as an int seed must lie in [0, 2**32), got {int(key)}; "
                f"e.g. {arg}=0 or {arg}=jax.random.key(0)."
            )
        return jax.random.key(int(key))
    if isinstance(key, jax.Array | np.ndarray):
        if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
            return key
        if key.dtype == np.uint32 and key.shape[-1:] == (2,):
            return jnp.asarray(key)
    raise UsageError(
        f"`{arg}` must be a jax.random key or an int seed, e.g. {arg}=jax.random.key(0) or "
        f"{arg}=0; got {key!r}."
    )
