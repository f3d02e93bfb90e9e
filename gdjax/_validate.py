"""Input validation shared by the whole package.

Every check raises ``ValueError`` or ``TypeError`` whose message names the argument and
says how to fix the call, before any XLA trace is shown. Checks only look at concrete
values: under ``jit``/``vmap`` a traced value passes through untouched.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "check_finite",
    "check_in_range",
    "check_positive",
    "check_same_structure",
    "check_shape",
    "is_concrete",
]


def is_concrete(x: Any) -> bool:
    """True when ``x`` holds a value now (not a tracer inside jit/vmap/grad)."""
    return not isinstance(x, jax.core.Tracer)


def _leaves_with_paths(tree: Any) -> list[tuple[str, Any]]:
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [(jax.tree_util.keystr(path), leaf) for path, leaf in leaves]


def check_finite(arg: str, tree: Any) -> None:
    """Raise if any concrete leaf of ``tree`` holds NaN or ±inf."""
    for path, leaf in _leaves_with_paths(tree):
        if leaf is None or not is_concrete(leaf) or callable(leaf):
            continue
        arr = np.asarray(leaf)
        if arr.dtype.kind in "fc" and not np.all(np.isfinite(arr)):
            bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
            raise ValueError(
                f"`{arg}{path}` holds {bad} non-finite value(s) (NaN or inf). "
                f"Clean or impute the data before passing it, e.g. drop rows with "
                f"np.isnan(x).any(axis=1)."
            )


def check_same_structure(arg: str, tree: Any, ref: Any, ref_name: str) -> None:
    """Raise if ``tree`` and ``ref`` differ in pytree structure or leaf shapes."""
    s1, s2 = jax.tree_util.tree_structure(tree), jax.tree_util.tree_structure(ref)
    if s1 != s2:
        raise ValueError(
            f"`{arg}` does not have the same structure as {ref_name}.\n"
            f"  {arg}: {s1}\n  {ref_name}: {s2}\n"
            f"Pass a pytree with the same keys/nesting as {ref_name}."
        )
    for (path, a), (_, b) in zip(_leaves_with_paths(tree), _leaves_with_paths(ref)):
        if jnp.shape(a) != jnp.shape(b):
            raise ValueError(
                f"`{arg}{path}` has shape {jnp.shape(a)} but {ref_name}{path} has shape "
                f"{jnp.shape(b)}. Pass arrays of matching shapes."
            )


def check_shape(arg: str, x: Any, shape: tuple[int | None, ...], hint: str = "") -> None:
    """Raise if ``x``'s shape does not match ``shape`` (``None`` matches any size)."""
    got = jnp.shape(x)
    ok = len(got) == len(shape) and all(s is None or s == g for s, g in zip(shape, got))
    if not ok:
        want = "(" + ", ".join("any" if s is None else str(s) for s in shape) + ")"
        raise ValueError(
            f"`{arg}` has shape {got}, expected {want}." + (f" {hint}" if hint else "")
        )


def check_positive(arg: str, value: Any, *, allow_zero: bool = False) -> None:
    """Raise if a concrete scalar ``value`` is not a positive finite number."""
    if callable(value) or not is_concrete(value):
        return
    try:
        v = float(np.asarray(value))
    except (TypeError, ValueError):
        raise TypeError(f"`{arg}` must be a number, got {value!r}.") from None
    if not np.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        need = "a non-negative" if allow_zero else "a positive"
        raise ValueError(f"`{arg}` must be {need} finite number, got {v!r}.")


def check_in_range(arg: str, value: Any, lo: float, hi: float, *, hi_open: bool = True) -> None:
    """Raise if a concrete scalar ``value`` lies outside [lo, hi) (or [lo, hi])."""
    if callable(value) or not is_concrete(value):
        return
    v = float(np.asarray(value))
    ok = lo <= v < hi if hi_open else lo <= v <= hi
    if not ok:
        interval = f"[{lo}, {hi})" if hi_open else f"[{lo}, {hi}]"
        raise ValueError(f"`{arg}` must lie in {interval}, got {v!r}.")
