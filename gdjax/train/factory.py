"""A sweep's optimizer factory as a static part, and the optimizer from a static part.

A factory is part of the compile key. Two factories are the same key when they are the
same function written once and evaluated again: the same code, the same values in its
closure and its defaults, and the same values of the globals it names (a ``lambda``
written inside a loop or a notebook cell is a new object at every pass, but it is not a
new program). A value that cannot be hashed (an array, a list) makes the factory its
own key, compared by identity, as any other function in the key is.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import optax

from gdjax import optim

__all__ = ["Factory", "function_key", "optimizer_of"]


def function_key(fn: Callable[..., Any]) -> Any:
    """What makes ``fn`` the program it is: ``(code, defaults, closure values, values of
    the globals it names)`` when all of them hash, else ``fn`` itself (by identity)."""
    if not isinstance(fn, types.FunctionType):  # a bound method, a callable object: itself
        return fn
    code = fn.__code__
    try:
        cells = tuple(cell.cell_contents for cell in fn.__closure__ or ())
        names = tuple((n, fn.__globals__[n]) for n in _names(code) if n in fn.__globals__)
        kwdefaults = tuple(sorted((fn.__kwdefaults__ or {}).items()))
        key = (code, fn.__defaults__, kwdefaults, cells, names)
        hash(key)
    except (TypeError, ValueError):  # an unhashable value, or a cell not yet filled
        return fn
    return key


def _names(code: types.CodeType) -> list[str]:
    """The global (and attribute) names ``code`` reads, with those of the functions and
    comprehensions defined inside it."""
    names = list(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names += _names(const)
    return names


class Factory:
    """A sweep's optimizer factory as the static part: called with the (traced) settings,
    compared by :func:`function_key`."""

    __slots__ = ("factory", "key")

    def __init__(self, factory: Callable[..., Any]) -> None:
        self.factory, self.key = factory, function_key(factory)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Factory) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __repr__(self) -> str:
        return f"Factory({getattr(self.factory, '__qualname__', self.factory)!r})"

    def __call__(self, hyper: Any) -> optax.GradientTransformation:
        opt = self.factory(**hyper)
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
