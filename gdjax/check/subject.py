"""What is checked: a registry model or a user's ``(loss_fn, backprop_fn)`` pair, resolved
to one :class:`Subject`; the checks of its arguments; the names of its rows."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gdjax._validate import (
    as_key,
    check_finite,
    check_int,
    check_same_structure,
)
from gdjax.models._base import Backprop, Model


class Subject(NamedTuple):
    """What is checked, whatever the user passed."""

    id: str
    title: str
    loss: Callable[[Any, Any], jax.Array]
    backprop: Callable[[Any, Any], Backprop]
    symbol: str  # the loss's letter in the document: "L", "J", "f"
    leaf_names: Any  # None, a to_named(tree) callable, or a sequence of names
    declared_adjoints: tuple[str, ...]
    check_loss: bool


def as_backprop(out: Any) -> Backprop:
    """Accept a Backprop, ``(loss, grads)`` or ``(loss, grads, adjoints)``."""
    if isinstance(out, Backprop):
        return out
    if isinstance(out, tuple) and len(out) in (2, 3):
        loss, grads, *adj = out
        adjoints = adj[0] if adj else {}
        if not isinstance(adjoints, Mapping):
            raise TypeError(
                "the backprop function's adjoints must be a dict {name: dL/dname}, got "
                f"{type(adjoints).__name__}."
            )
        return Backprop(loss, grads, dict(adjoints))
    raise TypeError(
        "the backprop function must return a gd.Backprop(loss, grads, adjoints), or a tuple "
        f"(loss, grads) or (loss, grads, adjoints); got {type(out).__name__}."
    )


def resolve(model_or_functions: Any, params: Any, batch: Any) -> tuple[Subject, Any, Any]:
    """The subject, params and batch of a check, validated."""
    if isinstance(model_or_functions, str):
        from gdjax import models

        model_or_functions = models.get(model_or_functions)
    if isinstance(model_or_functions, Model):
        model = model_or_functions
        ex_params, ex_batch = model.example()
        if params is None:
            params = ex_params
        elif batch is None:  # the example batch: the shapes must be the example's too
            check_same_structure("params", params, ex_params, f"{model.id}'s example params")
        else:
            check_same_structure(
                "params", _shapeless(params), _shapeless(ex_params), f"{model.id}'s params"
            )
        if batch is None:
            batch = ex_batch
        else:
            check_same_structure(
                "batch", _shapeless(batch), _shapeless(ex_batch), f"{model.id}'s example batch"
            )
        subject = Subject(
            id=model.id,
            title=model.title,
            loss=model.loss,
            backprop=model.backprop,
            symbol=model.loss_symbol,
            leaf_names=model.leaf_names,
            declared_adjoints=tuple(model.adjoint_names),
            check_loss=True,
        )
        return subject, params, batch
    if (
        isinstance(model_or_functions, (tuple, list))
        and len(model_or_functions) == 2
        and all(callable(f) for f in model_or_functions)
    ):
        if params is None:
            raise TypeError(
                "check_backprop((loss_fn, backprop_fn), params, batch): pass `params`, the "
                "point to check at (a pytree of float arrays)."
            )
        loss_fn, backprop_fn = model_or_functions
        subject = Subject(
            id="your (loss_fn, backprop_fn)",
            title=f"hand-written {_fn_name(backprop_fn)} vs autodiff of {_fn_name(loss_fn)}",
            loss=loss_fn,
            backprop=backprop_fn,
            symbol="L",
            leaf_names=None,
            declared_adjoints=(),
            check_loss=True,
        )
        return subject, params, batch
    raise TypeError(
        "`model_or_functions` must be a registry id such as 'G1', a gd.Model, or a pair "
        f"(loss_fn, backprop_fn) of callables; got {type(model_or_functions).__name__}."
    )


def _shapeless(tree: Any) -> Any:
    """``tree`` with every leaf replaced by 0: compares structure, not shapes."""
    return jax.tree_util.tree_map(lambda _: 0, tree)


def _fn_name(fn: Callable) -> str:
    return getattr(fn, "__name__", type(fn).__name__)


def describe(fn: Callable | str) -> str:
    return repr(fn) if isinstance(fn, str) else _fn_name(fn)


def validate_point(params: Any, batch: Any, *, finite: bool = True) -> None:
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        where = "params" + jax.tree_util.keystr(path)
        if not hasattr(leaf, "dtype") and not isinstance(leaf, (int, float)):
            raise TypeError(f"`{where}` must be an array, got {type(leaf).__name__}.")
        if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            raise TypeError(
                f"`{where}` has dtype {jnp.result_type(leaf)}; every leaf of `params` is "
                f"differentiated, so it must hold floats (e.g. jnp.asarray(v, jnp.float32))."
            )
    for path, leaf in jax.tree_util.tree_flatten_with_path(batch)[0]:
        if not hasattr(leaf, "dtype") and not isinstance(leaf, (bool, int, float)):
            raise TypeError(
                f"`batch{jax.tree_util.keystr(path)}` must be an array or a number, "
                f"got {type(leaf).__name__}."
            )
    if finite:
        check_finite("params", params)
        check_finite("batch", batch)


def as_seed(key: Any) -> list[int]:
    """The seed of the host draw of random points: the bits of the key (or int seed)."""
    return np.asarray(jax.random.key_data(as_key(key))).ravel().tolist()


def check_points(points: Any) -> int:
    return check_int("points", points, what="an int (how many points to check)")


def leaf_namer(subject: Subject, params: Any) -> Callable[[Any], dict[str, jax.Array]]:
    """A function from a params-shaped tree to ``{leaf name: array}``."""
    names = subject.leaf_names
    if callable(names):
        return lambda tree: dict(names(tree))
    leaves_with_path = jax.tree_util.tree_flatten_with_path(params)[0]
    if names is None:
        top = "layers" if isinstance(params, (list, tuple)) else "params"
        names = [_path_name(path, top) for path, _ in leaves_with_path]
    names = [str(n) for n in names]
    if len(names) != len(leaves_with_path) or len(set(names)) != len(names):
        raise ValueError(
            f"{subject.id}: Model.leaf_names must give one distinct name per params leaf "
            f"({len(leaves_with_path)} leaves), got {names!r}."
        )
    return lambda tree: dict(zip(names, jax.tree_util.tree_leaves(tree)))


def _path_name(path: tuple, top: str) -> str:
    """``('W1',)`` -> ``"W1"``; ``(1, 'W')`` -> ``"layers[1].W"``."""
    text = ""
    for entry in path:
        if isinstance(entry, jax.tree_util.DictKey):
            text += f".{entry.key}"
        elif isinstance(entry, jax.tree_util.SequenceKey):
            text += f"[{entry.idx}]"
        elif isinstance(entry, jax.tree_util.GetAttrKey):
            text += f".{entry.name}"
        else:
            text += str(entry)
    if not text:
        return top
    return top + text if text.startswith("[") else text.lstrip(".")
