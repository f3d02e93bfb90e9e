"""The user's functions in the compile key: the loss, ``value_and_grad``, ``monitor``
(:class:`Keyed`) and a sweep's optimizer factory (:class:`Factory`).

Two functions are the same key when they are the same function written once and
evaluated again: the same code, the same values in its closure and its defaults, and the
same values of the globals it names (a ``lambda`` written inside a loop or a notebook
cell is a new object at every pass, but it is not a new program). Values are compared
by value when they hash, by identity when they cannot change (a concrete ``jax.Array``,
a frozen dataclass such as a gdjax model); any other value (a NumPy array, a list, a
dict: they may have changed), a bound method or a callable object makes the function
its own key, compared by identity.
"""

from __future__ import annotations

import dataclasses
import types
import weakref
from collections.abc import Callable
from typing import Any

import jax
import optax

from gdjax import optim
from gdjax._validate import is_concrete
from gdjax.optim._hyper import ById

__all__ = ["Factory", "Keyed", "function_key", "keyed", "optimizer_of"]


def function_key(fn: Callable[..., Any]) -> Any:
    """What makes ``fn`` the program it is: ``(code, defaults, closure values, values of
    the globals it names)`` when all of them hash, else ``fn`` itself (by identity)."""
    if not isinstance(fn, types.FunctionType) or fn in _BY_IDENTITY:
        return fn  # a bound method, a callable object, or a function seen to read one
    code = fn.__code__
    try:
        cells = tuple(_value(cell.cell_contents) for cell in fn.__closure__ or ())
        names = tuple(
            (n, _value(fn.__globals__[n])) for n in _names_of(code) if n in fn.__globals__
        )
        kwdefaults = tuple(sorted((fn.__kwdefaults__ or {}).items()))
        # the code by identity: a lambda evaluated again is made from the same code object
        key = (ById(code), fn.__defaults__, kwdefaults, cells, names)
        hash(key)
    except (TypeError, ValueError):  # an unhashable value, or a cell not yet filled
        _BY_IDENTITY.add(fn)  # (always a safe key: not looked at again)
        return fn
    return key


#: Functions found to be their own key (the usual case of a model's loss: it reads a
#: module's dict of activations), so that the next call does not look again.
_BY_IDENTITY: weakref.WeakSet = weakref.WeakSet()


def _value(x: Any) -> Any:
    """``x`` as part of a function's key: itself when it hashes; by identity when it
    cannot change (a concrete ``jax.Array``, a frozen dataclass such as a gdjax model);
    else it raises TypeError (the function is then its own key)."""
    try:
        hash(x)
        return x
    except TypeError:
        pass
    frozen = dataclasses.is_dataclass(x) and x.__dataclass_params__.frozen
    if frozen or (isinstance(x, jax.Array) and is_concrete(x)):
        return ById(x)
    raise TypeError(f"{type(x).__name__} is compared by identity only")


def _names_of(code: types.CodeType) -> tuple[str, ...]:
    """:func:`_names` of ``code``, each once, remembered per code object."""
    hit = _NAMES.get(id(code))
    if hit is None or hit[0] is not code:
        if len(_NAMES) >= 4096:
            _NAMES.clear()
        hit = _NAMES[id(code)] = (code, tuple(dict.fromkeys(_names(code))))
    return hit[1]


_NAMES: dict[int, tuple[types.CodeType, tuple[str, ...]]] = {}


def _names(code: types.CodeType) -> list[str]:
    """The global (and attribute) names ``code`` reads, with those of the functions and
    comprehensions defined inside it."""
    names = list(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names += _names(const)
    return names


class Keyed:
    """A user's function as part of the compile key: called as itself, compared by
    :func:`function_key`; its attributes (``__name__``, ``__code__``) are its own."""

    __slots__ = ("__weakref__", "fn", "key")  # weakref: JAX's caches hold functions so

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn, self.key = fn, function_key(fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __eq__(self, other: object) -> bool:
        return type(other) is Keyed and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __repr__(self) -> str:
        return repr(self.fn)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fn, name)


def keyed(fn: Any) -> Any:
    """``fn`` as a :class:`Keyed` (None stays None)."""
    return fn if fn is None or isinstance(fn, Keyed) else Keyed(fn)


class Factory(Keyed):
    """A sweep's optimizer factory as the static part: called with the (traced) settings,
    compared as a :class:`Keyed` function is."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Factory) and self.key == other.key

    __hash__ = Keyed.__hash__

    def __call__(self, hyper: Any) -> optax.GradientTransformation:
        opt = self.fn(**hyper)
        if not isinstance(opt, optax.GradientTransformation):
            raise TypeError(
                "sweep: `optimizer(**hyperparams)` must return an optax.GradientTransformation, "
                f"got {type(opt).__name__}."
            )
        return opt


def optimizer_of(opt_static: Any, leaves: Any) -> optax.GradientTransformation:
    """The optimizer from its static part and its (traced) leaves."""
    if isinstance(opt_static, Factory):
        return opt_static(leaves)
    return optim.combine(opt_static, leaves)
