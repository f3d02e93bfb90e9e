r"""The machinery under every gdjax schedule: :class:`PytreeSchedule` and its checks.

A schedule is a pure function of the step count :math:`t = 0, 1, 2, \ldots` and a pytree:
its numbers, step counts included, are leaves; its kind (and the number of its pieces)
static. :mod:`gdjax.optim.schedules` defines the formulas and registers each with
:func:`register_kind`, together with the steps at which its value can change course (its
*breakpoints*). Every formula is linear, cosine, polynomial or exponential between
consecutive breakpoints, so its extremes over all steps lie at a breakpoint or at the far
end; :func:`check_schedule_values` looks there when the schedule is used as a learning
rate or a weight decay.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gdjax._validate import UsageError, check_finite, check_scalar, is_concrete
from gdjax.optim._hyper import (
    as_leaf,
    broadcast_settings,
    check_elements,
    check_one_setting,
    freeze,
    settings_count,
    show,
    thaw,
)
from gdjax.optim._util import Scalar, check_steps

__all__ = [
    "FAR",
    "PytreeSchedule",
    "check_real",
    "check_schedule_values",
    "count_leaf",
    "evaluate",
    "make_schedule",
    "register_kind",
    "schedule_arg",
    "shift",
    "shifted",
    "steps_as",
    "time_of",
]

FAR = int(np.iinfo(np.int32).max)  # the step count saturates here (optim._util.increment)
_ONE_BY_ONE = 64  # breakpoints evaluated one at a time up to this many (then vmapped)

_FORMULAS: dict[str, Callable[..., jax.Array]] = {}
_BREAKPOINTS: dict[str, Callable[..., list[int]]] = {}


def register_kind(kind: str, formula: Callable, breakpoints: Callable) -> None:
    """Declare schedule ``kind``: ``formula(count, **values, **static)`` and
    ``breakpoints(values, **static) -> [steps]`` (numbers, or 1-D arrays for K settings)."""
    _FORMULAS[kind], _BREAKPOINTS[kind] = formula, breakpoints


class PytreeSchedule:
    """A gdjax schedule: ``schedule(count)``, and a pytree of its numeric constants.

    ``kind`` and ``static`` (flags, a function of your own) are the pytree's aux data,
    ``values`` (a dict of float leaves, tuples of them, or nested schedules) its children;
    step counts are leaves too. Two schedules of the same kind (and number of pieces)
    have equal tree structures whatever their numbers.
    """

    __slots__ = ("__weakref__", "kind", "static", "values")  # weakref: jax.jit(schedule)

    def __init__(self, kind: str, values: Mapping[str, Any], static: tuple) -> None:
        self.kind, self.values, self.static = kind, dict(values), static

    def __call__(self, count: jax.Array | int) -> jax.Array:
        check_one_setting(self.values, f"{self.kind} schedule")
        dtype = getattr(count, "dtype", None)
        if dtype is None and not isinstance(count, str | bytes | bool):
            dtype = np.asarray(count).dtype  # a Python number or a list of them
        if dtype is None or not jnp.issubdtype(dtype, jnp.number):
            raise UsageError(
                f"`count` must be a step number (an int or an int array), got {count!r}."
            )
        return evaluate(self, count)

    @property
    def num_settings(self) -> int | None:
        """K for a schedule of K settings (1-D leaves), None for one schedule."""
        return settings_count(self.values)

    def points(self) -> list[Any]:
        """The breakpoints as the formula states them: numbers, or (K,) arrays."""
        statics = {name: thaw(v) for name, v in self.static}
        return _BREAKPOINTS[self.kind](self.values, **statics)

    def breakpoints(self) -> list[int]:
        """The steps at which the value may change course, 0 and the far end included
        (for K settings, those of every setting); needs concrete step counts."""
        points = [np.ravel(np.asarray(p, np.float64)) for p in self.points()]
        steps = np.concatenate([np.asarray([0.0, FAR]), *points])
        steps = steps[(steps >= 0) & (steps <= FAR)]
        return [int(s) for s in np.unique(np.round(steps))]

    def __repr__(self) -> str:
        args = [f"{k}={show(thaw(v))}" for k, v in (*self.values.items(), *self.static)]
        return f"{self.kind}({', '.join(args)})"

    def outline(self) -> str:
        """What compiles: the kind, its options and pieces, without the numbers
        (``exponential_decay(staircase=True)``, ``piecewise_constant(boundaries: 3)``)."""
        args = [  # the number of boundaries (a piecewise schedule's scales: as many)
            f"{k}={v.outline()}" if isinstance(v, PytreeSchedule) else f"{k}: {len(v)}"
            for k, v in self.values.items()
            if isinstance(v, PytreeSchedule | tuple) and k != "scales"
        ]  # and a join's own functions by position, not its bookkeeping (n, own)
        args += [f"{k}={show(thaw(v))}" for k, v in self.static if k not in ("n", "own")]
        args += [f"schedules[{i}]={show(thaw(fn))}" for i, fn in dict(self.static).get("own", ())]
        return f"{self.kind}({', '.join(args)})"


def evaluate(schedule: Any, count: Any) -> jax.Array:
    """A schedule's value at ``count``: a gdjax one without the one-setting check (so a
    schedule of K settings gives K values), any other function called as it is."""
    if not isinstance(schedule, PytreeSchedule):
        return schedule(count)
    statics = {name: thaw(v) for name, v in schedule.static}
    return _FORMULAS[schedule.kind](count, **schedule.values, **statics)


def _flatten_with_keys(s: PytreeSchedule):
    names = tuple(sorted(s.values))
    children = tuple((jax.tree_util.DictKey(n), s.values[n]) for n in names)
    return children, (s.kind, names, s.static)


def _unflatten(aux, children) -> PytreeSchedule:
    kind, names, static = aux
    return PytreeSchedule(kind, dict(zip(names, children)), static)


jax.tree_util.register_pytree_with_keys(
    PytreeSchedule,
    _flatten_with_keys,
    _unflatten,
    flatten_func=lambda s: (tuple(s.values[n] for n in sorted(s.values)), _flatten_with_keys(s)[1]),
)


def check_real(arg: str, value: Any) -> None:
    """A real finite number (negative allowed, as optax's schedules allow it)."""
    check_scalar(arg, value)
    check_finite(arg, value)


def make_schedule(
    kind: str,
    numeric: Mapping[str, tuple[Any, Callable]],
    static: Mapping[str, Any],
    steps: Mapping[str, Any] | None = None,
) -> PytreeSchedule:
    """Validate each number (each element of a 1-D one) and build the schedule.

    ``numeric`` maps a name to ``(value, check)``; a value that is a gdjax schedule is
    kept as a nested pytree, a tuple as a tuple of leaves, ``None`` as static. ``steps``
    maps a name to its step-count leaf (or tuple of them), made by :func:`count_leaf`.
    """
    values, statics = {}, dict(static)
    for name, (value, check) in numeric.items():
        if value is None:
            statics[name] = None
        elif isinstance(value, PytreeSchedule):
            values[name] = value
        elif isinstance(value, tuple):
            values[name] = tuple(_leaf(f"{name}[{i}]", v, check) for i, v in enumerate(value))
        else:
            values[name] = _leaf(name, value, check)
    values.update(steps or {})
    values = broadcast_settings(values, settings_count(values))
    return PytreeSchedule(kind, values, tuple(sorted((n, freeze(v)) for n, v in statics.items())))


def _leaf(arg: str, value: Any, check: Callable[[str, Any], None]) -> Any:
    leaf = as_leaf(arg, value)
    check_elements(arg, leaf, check)
    return leaf


def count_leaf(arg: str, value: Any, *, allow_zero: bool = False) -> Any:
    """A step count as a float leaf: an int, or a float or an array of whole numbers (0-d,
    or 1-D for K settings, as a sweep passes them; every concrete element checked)."""
    if not isinstance(value, float | np.floating | np.ndarray | jax.Array):
        check_steps(arg, value, allow_zero=allow_zero)  # an int, or refused by name
    leaf = as_leaf(arg, value)
    if is_concrete(leaf):
        least = 0 if allow_zero else 1
        a = np.ravel(np.asarray(leaf, np.float64))
        bad = ~np.isfinite(a) | (a != np.round(a)) | (a < least)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            name = arg if np.ndim(leaf) == 0 else f"{arg}[{i}]"
            raise UsageError(f"`{name}` must be a whole number of steps >= {least}, got {a[i]:g}.")
    return leaf


def time_of(count: jax.Array | int, *values: Scalar) -> jax.Array:
    """The step count as a float of the values' common dtype."""
    return jnp.asarray(count).astype(jnp.result_type(*values, float))


def steps_as(t: jax.Array, *counts: Any) -> Any:
    """Step-count leaves in ``t``'s float dtype (as a Python int there was)."""
    out = tuple(jnp.asarray(c).astype(t.dtype) for c in counts)
    return out[0] if len(out) == 1 else out


def shift(count: Any, by: Any) -> jax.Array:
    """``max(count - by, 0)`` in the count's own dtype (an int stays an int)."""
    count = jnp.asarray(count)
    return jnp.maximum(count - jnp.asarray(by).astype(count.dtype), 0)


def check_schedule_values(
    arg: str, schedule: PytreeSchedule, *, what: str, allow_all_zero: bool = False
) -> None:
    """Refuse a schedule used as ``arg`` whose value is negative (or non-finite) at one of
    its breakpoints, or (unless ``allow_all_zero``) zero at every one of them; ``what``
    says what the value is.

    Looked at only when every leaf is concrete; a schedule of K settings is checked
    setting by setting, and the message names the first bad step and setting.
    """
    if not all(is_concrete(x) for x in jax.tree.leaves(schedule)):
        return
    steps = schedule.breakpoints()
    k = num_settings_of(schedule)

    def at(count: jax.Array) -> jax.Array:
        if k is None:
            return evaluate(schedule, count)
        return jax.vmap(lambda s: evaluate(s, count))(schedule)

    try:
        with jax.ensure_compile_time_eval():  # concrete even while an outer jit traces
            if len(steps) <= _ONE_BY_ONE:  # a function of your own may branch on the count
                rows = [at(jnp.asarray(t, jnp.int32)) for t in steps]
            else:  # K settings of step counts: their breakpoints at once
                rows = [jax.vmap(at)(jnp.asarray(steps, jnp.int32))]
            values = np.concatenate([np.asarray(r, np.float64).reshape(-1, k or 1) for r in rows])
    except (
        jax.errors.ConcretizationTypeError,
        jax.errors.TracerArrayConversionError,
        jax.errors.TracerBoolConversionError,
    ):
        return  # a function of your own inside it closes over a traced value
    bad = ~np.isfinite(values) | (values < 0)
    if bad.any():
        j, i = (int(a[0]) for a in np.nonzero(bad))
        where = f" (setting {i})" if k else ""
        raise UsageError(
            f"`{arg}` is the schedule {schedule!r}, whose value at step {steps[j]}{where} is "
            f"{float(values[j, i]):.6g}: {what} must be a non-negative finite number at every "
            f"step. Change its numbers (e.g. a non-negative end_value)."
        )
    never = np.flatnonzero(np.all(values == 0, axis=0))
    if not allow_all_zero and never.size:
        where = f" (setting {int(never[0])})" if k else ""
        raise UsageError(
            f"`{arg}` is the schedule {schedule!r}, which is 0 at every step checked{where}: "
            f"the parameters would never move. Give it a positive value somewhere."
        )


def shifted(schedule: Any, by: Any) -> list[Any]:
    """The breakpoints of ``schedule`` (a gdjax one, else only its start), moved by ``by``
    (a step-count leaf: setting by setting for K settings)."""
    inner = schedule.points() if isinstance(schedule, PytreeSchedule) else [0]
    start = np.asarray(by, np.float64)
    return [start, *(start + np.asarray(b, np.float64) for b in inner)]


def schedule_arg(arg: str, value: Any) -> Any:
    """``value``, which must be a schedule (a function of the step count)."""
    if not callable(value):
        raise UsageError(
            f"`{arg}` must be a schedule (a function of the step count), got {value!r}. "
            f"Wrap a number as gd.optim.constant(value)."
        )
    return value


def num_settings_of(schedule: PytreeSchedule) -> int | None:
    return settings_count(schedule.values)
