"""Helpers shared by the update rules: hyperparameter checks, dtype casts, leafwise maps.

A transform keeps its hyperparameters as it is given them (a Python number, an array, a
tracer) and casts each to a gradient leaf's dtype only where they meet. A decay rate β may
come as a :class:`Beta`, β together with :math:`1-β` each rounded once from the caller's
number: the rules of :mod:`gdjax.optim.rules` store both as pytree leaves, so that their
``1 - b1`` is optax's (rounded from double precision), not ``1 - float32(b1)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, TypeAlias

import jax
import jax.numpy as jnp
import numpy as np

from gdjax._validate import (
    UsageError,
    check_in_range,
    check_int,
    check_positive,
    check_same_structure,
    check_scalar,
)

Scalar: TypeAlias = float | jax.Array
"""A hyperparameter: a Python number or a JAX scalar (concrete or traced)."""

Schedule: TypeAlias = Callable[[jax.Array], jax.Array]
"""A function of the step count ``t = 0, 1, 2, …`` returning a scalar."""

ScalarOrSchedule: TypeAlias = Scalar | Schedule

_INT32_MAX = np.iinfo(np.int32).max

STATE_OF = "the optimizer state (made by init from params)"


class Beta(NamedTuple):
    """A decay rate β and its complement :math:`1-β`, each rounded once to its dtype.

    ``1 - float32(β)`` is exact but is not ``float32(1 - β)``: for β = 0.999 the two differ
    by 1.3e-5 relative. Keeping the complement rounded from the caller's number keeps the
    rules equal to optax's (which computes ``1 - β`` on a Python float) bit for bit.
    """

    value: Any
    complement: Any


def beta_parts(h: Any) -> tuple[Any, Any]:
    """``(β, 1 − β)``: a :class:`Beta`'s two parts, else ``1 − β`` in ``β``'s own precision."""
    if isinstance(h, Beta):
        return h.value, h.complement
    return h, 1 - h


def cast(h: Scalar, like: jax.Array) -> jax.Array:
    """The hyperparameter ``h`` as an array of ``like``'s dtype."""
    return jnp.asarray(h, dtype=jnp.result_type(like))


def as_float(x: Any) -> jax.Array:
    """``x`` as a floating array: a Python number takes JAX's default float dtype."""
    x = jnp.asarray(x)
    if jnp.issubdtype(x.dtype, jnp.floating):
        return x
    return x.astype(jnp.result_type(float))


def debias(decay: Scalar, count: jax.Array, like: jax.Array) -> jax.Array:
    """Adam's bias-correction denominator ``1 - decayᵗ`` in ``like``'s dtype.

    The power is taken in the hyperparameter's own float precision (double for a Python
    number under x64) and rounded once at the end, so ``1 - 0.999ᵗ`` keeps its digits.
    """
    d = as_float(beta_parts(decay)[0])
    return (1 - jax.lax.pow(d, count)).astype(jnp.result_type(like))


def real_dtype(like: jax.Array) -> np.dtype:
    """The real dtype of ``like``'s values: float32 for complex64, else its own dtype."""
    dtype = jnp.result_type(like)
    return np.dtype(jnp.finfo(dtype).dtype) if jnp.issubdtype(dtype, jnp.complexfloating) else dtype


def abs_sq(g: jax.Array) -> jax.Array:
    r"""The squared modulus :math:`|g|^2`, real: :math:`g^2` for a real ``g``,
    :math:`\mathrm{Re}(\bar g g)` for a complex one (as optax's second moments use)."""
    if jnp.issubdtype(g.dtype, jnp.complexfloating):
        return jnp.real(g) * jnp.real(g) + jnp.imag(g) * jnp.imag(g)
    return g * g


def increment(count: jax.Array) -> jax.Array:
    """``count + 1``, saturating at the int32 maximum instead of wrapping around."""
    return jnp.where(count < _INT32_MAX, count + 1, count)


def zero_count() -> jax.Array:
    return jnp.zeros([], jnp.int32)


def map_leaves(f: Callable[..., tuple], n_out: int, tree: Any, *rest: Any) -> tuple:
    """Apply ``f`` (one array in, an ``n_out``-tuple of arrays out) leaf by leaf.

    ``rest`` are pytrees with ``tree``'s structure. Returns ``n_out`` pytrees shaped like
    ``tree``: the per-leaf rule lifted to pytrees, as ``jax.example_libraries.optimizers``
    does it.
    """
    treedef = jax.tree.structure(tree)
    columns = zip(treedef.flatten_up_to(tree), *(treedef.flatten_up_to(r) for r in rest))
    results = [f(*leaves) for leaves in columns]
    return tuple(treedef.unflatten([r[i] for r in results]) for i in range(n_out))


# ---------------------------------------------------------------------------------------
# Checks. Each runs in Python when the transformation is built or traced, so under jit
# it costs nothing at run time; traced values pass through untouched.


def check_learning_rate(arg: str, value: Any) -> None:
    """A positive number (when concrete), or a schedule."""
    if callable(value):
        return
    check_scalar(arg, value)
    check_positive(arg, value)


def check_nonnegative(arg: str, value: Any, *, schedule_ok: bool = False) -> None:
    if schedule_ok and callable(value):
        return
    check_scalar(arg, value)
    check_positive(arg, value, allow_zero=True)


def check_eps(arg: str, value: Any) -> None:
    """A positive number: eps ≤ 0 lets a zero gradient divide by zero."""
    check_scalar(arg, value)
    check_positive(arg, value)


def check_beta(arg: str, value: Any) -> None:
    """A decay rate in [0, 1): at 1 the average never forgets and never moves."""
    value = beta_parts(value)[0]
    check_scalar(arg, value)
    check_in_range(arg, value, 0.0, 1.0)


def check_steps(arg: str, value: Any, *, allow_zero: bool = False) -> None:
    """A whole number of steps (positive, or non-negative with ``allow_zero``)."""
    check_int(arg, value, minimum=0 if allow_zero else 1, what="a whole number of steps")


def check_dtype(arg: str, value: Any) -> None:
    """``None`` or a floating (or complex) dtype, e.g. ``jnp.bfloat16`` or ``"float32"``."""
    if value is None:
        return
    try:
        dtype = np.dtype(value)
    except TypeError:
        raise UsageError(
            f"`{arg}` must be a dtype such as jnp.bfloat16, jnp.float32 or None (the params' "
            f"own dtype); got {value!r}, which is not a dtype."
        ) from None
    if not jnp.issubdtype(dtype, jnp.inexact):
        raise UsageError(
            f"`{arg}` must be a floating dtype (an accumulator holds fractions), got {dtype}; "
            f"pass e.g. jnp.bfloat16, jnp.float32, or None."
        )


def check_params_leaves(params: Any, arg: str = "params") -> None:
    """Every leaf of ``params`` holds floating (or complex) numbers: an update rule adds
    fractions to them."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        where = f"`{arg}{jax.tree_util.keystr(path)}`"
        try:
            dtype = None if isinstance(leaf, str | bytes) else jnp.result_type(leaf)
        except TypeError:
            dtype = None
        if dtype is None:
            raise UsageError(
                f"{where} is {leaf!r}, not an array of numbers; pass e.g. "
                f"jnp.asarray(value, jnp.float32)."
            )
        if not jnp.issubdtype(dtype, jnp.inexact):
            raise UsageError(
                f"{where} has dtype {dtype}; an update rule moves floating (or complex) "
                f"parameters. Pass e.g. jnp.asarray(value, jnp.float32)."
            )


def check_state(state: Any, expected: type, owner: str) -> None:
    """Raise unless ``state`` is the state that ``owner``'s ``init`` returns."""
    if state is None:
        raise UsageError(
            f"`state` is None: {owner}.update was called before init. Call "
            f"`state = opt.init(params)` once and pass that state to "
            f"`opt.update(grads, state, params)`."
        )
    if not isinstance(state, expected):
        raise UsageError(
            f"`state` is a {type(state).__name__}, but {owner} expects the {expected.__name__} "
            f"that its init returns. Pass the state made by this optimizer's "
            f"`init(params)`; states of different optimizers are not interchangeable."
        )


def check_grads(grads: Any, reference: Any, what: str) -> None:
    """Raise unless ``grads`` has the pytree structure and leaf shapes of ``reference``."""
    check_same_structure("grads", grads, reference, what)
