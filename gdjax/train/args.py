"""The checks of ``fit``'s and ``sweep``'s arguments, made before anything is compiled."""

from __future__ import annotations

import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from gdjax._validate import UsageError, check_finite, check_int
from gdjax.models._base import shapes_of_call
from gdjax.train.planner import abstract, batch_shapes

Data = Any
_LOSS_DTYPES: dict[Any, np.dtype] = {}  # memo: a loss traced once per shapes
STEPS_LIMIT = 2**31 - 1  # the step counter is int32 (and saturates there)


def check_steps(steps: Any, arg: str = "steps") -> int:
    """A whole number of steps in [1, 2**31 − 1): the step counter is int32."""
    steps = check_int(arg, steps, what="a whole number of steps")
    if steps >= STEPS_LIMIT:
        raise UsageError(
            f"`{arg}` must be below 2**31 - 1 = {STEPS_LIMIT} (the step counter is int32), got "
            f"{steps}. Run fewer steps, or continue a run from its checkpoint."
        )
    return steps


@functools.cache
def _memory() -> int | None:
    """This machine's physical memory in bytes (None where it cannot be read)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: no limit known
        return None


def check_history(steps: int, record_every: int, bytes_per_record: int, runs: int = 1) -> None:
    """Refuse, before any work, a loss history larger than half this machine's memory."""
    n_rec = -(-steps // record_every)
    need = n_rec * runs * bytes_per_record
    memory = _memory()
    if memory is None:
        return
    if need > memory // 2:
        raise UsageError(
            f"`steps={steps}` with `record_every={record_every}` records {n_rec} times "
            f"({need / 2**30:.1f} GiB of history for {runs} run(s)), more than half this "
            f"machine's memory. Record less often: pass a larger `record_every`."
        )


def check_optimizer(opt: Any, arg: str = "optimizer") -> None:
    if isinstance(opt, optax.GradientTransformation):
        return
    if callable(opt) and not hasattr(opt, "update"):
        raise UsageError(
            f"`{arg}` must be an optax.GradientTransformation, got the function "
            f"{getattr(opt, '__name__', opt)!r}. Call it first, e.g. "
            f"optimizer=gd.optim.adam(1e-3)."
        )
    raise UsageError(
        f"`{arg}` must be an optax.GradientTransformation (with .init and .update), got "
        f"{type(opt).__name__}. Pass e.g. optimizer=gd.optim.sgd(0.1) or optax.adam(1e-3)."
    )


def refuse_non_finite(params: Any, data: Data) -> None:
    """Raise the error that names the non-finite leaf of ``params`` or ``data`` (called
    when the initial state's check failed: the first chunk then ran no step)."""
    check_finite("params", params)  # names the leaf, and says how to clean it
    check_finite("data", data)
    raise UsageError("`params` or `data` holds a non-finite value (NaN or inf).")


def n_examples(data: Data) -> int | None:
    """The common leading-axis size of ``data``'s leaves (None when it has none)."""
    shapes = [np.shape(x) for x in jax.tree_util.tree_leaves(data)]
    if not shapes:
        return None
    if all(s and s[0] == shapes[0][0] for s in shapes):  # the common case: no paths
        return shapes[0][0]
    leaves = jax.tree_util.tree_flatten_with_path(data)[0]
    sizes = {}
    for path, leaf in leaves:
        shape = jnp.shape(leaf)
        if not shape:
            raise UsageError(
                f"`data{jax.tree_util.keystr(path)}` is a scalar; every leaf of `data` needs "
                f"the examples on axis 0, e.g. x.reshape(-1, 1)."
            )
        sizes[jax.tree_util.keystr(path)] = shape[0]
    if len(set(sizes.values())) > 1:
        first, m = next(iter(sizes.items()))
        other, n = next((p, s) for p, s in sizes.items() if s != m)
        raise UsageError(
            f"Leaves of `data` disagree on the number of examples (axis 0): "
            f"`data{first}` has {m} but `data{other}` has {n}. Put the examples on axis 0 "
            f"of every leaf."
        )
    return next(iter(sizes.values()))


def as_arrays(arg: str, tree: Any) -> Any:
    """``tree``'s leaves as arrays; nested Python lists of numbers are refused (they are
    pytrees of scalars, not arrays): the message says to wrap them."""
    leaves = jax.tree_util.tree_leaves(tree)
    if all(isinstance(x, jax.Array) and isinstance(x.dtype, np.dtype) for x in leaves):
        return tree  # numbers already (a typed key is checked below)
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if isinstance(leaf, str | bytes) or leaf is None:
            raise UsageError(
                f"`{arg}{jax.tree_util.keystr(path)}` is {leaf!r}; every leaf must be an array."
            )
        kind = getattr(getattr(leaf, "dtype", None), "kind", "f")
        if kind in "OSUVMm":  # objects, strings, bytes, records, dates: not numbers
            raise UsageError(
                f"`{arg}{jax.tree_util.keystr(path)}` is an array of dtype {leaf.dtype}; every "
                f"leaf must hold numbers. Convert it, e.g. np.asarray(values, np.float32)."
            )
    if _has_list_of_numbers(tree):
        raise UsageError(
            f"`{arg}` holds a Python list of numbers; pass arrays instead, e.g. "
            f"jnp.asarray(values, jnp.float32) (a list is a pytree of separate scalars)."
        )
    try:
        return jax.tree_util.tree_map(
            lambda x: x if isinstance(x, jax.Array) else jnp.asarray(x), tree
        )
    except TypeError as e:
        raise UsageError(f"`{arg}` must be a pytree of arrays ({e}).") from e


def arrays(arg: str, tree: Any) -> tuple[Any, tuple]:
    """``tree`` with array leaves (:func:`as_arrays`) and its signature: its structure and
    each leaf's shape, dtype and weak type (hashable; what a compiled program sees)."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    if all(isinstance(x, jax.Array) for x in leaves):  # the common case: one pass
        return tree, (treedef, tuple(x.aval for x in leaves))
    tree = as_arrays(arg, tree)  # convert and check
    return tree, signature(tree)


def signature(tree: Any) -> tuple:
    """``tree``'s structure and each leaf's shape, dtype and weak type (hashable)."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return treedef, tuple(_leaf_signature(x) for x in leaves)


def _leaf_signature(x: Any) -> Any:
    if isinstance(x, jax.Array):
        return x.aval  # shape, dtype and weak type
    if isinstance(x, np.ndarray):
        return jax.core.ShapedArray(x.shape, x.dtype)
    return np.shape(x), type(x), True  # a Python scalar: weakly typed


def _has_list_of_numbers(tree: Any) -> bool:
    if isinstance(tree, list) and any(isinstance(x, int | float) for x in tree):
        return True
    if isinstance(tree, dict):
        return any(_has_list_of_numbers(v) for v in tree.values())
    if isinstance(tree, list | tuple):
        return any(_has_list_of_numbers(v) for v in tree)
    return False


def check_batch(batch_size: int | None, m: int | None, mesh_size: int) -> None:
    if batch_size is None:
        return
    if m is None:
        raise UsageError(
            f"`batch_size={batch_size}` needs data with examples on axis 0, but `data` has "
            f"no arrays. Use batch_size=None for a data-free loss."
        )
    if batch_size > m:
        raise UsageError(
            f"`batch_size={batch_size}` is larger than the number of examples m={m}. "
            f"Pass batch_size <= {m}, or batch_size=None for full-batch descent."
        )
    if batch_size % mesh_size:
        raise UsageError(
            f"`batch_size={batch_size}` is not divisible by the {mesh_size} devices of "
            f"`mesh`. Pass a multiple of {mesh_size}."
        )


def data_axis(mesh: Mesh) -> str:
    if not isinstance(mesh, Mesh):
        raise UsageError(
            f"`mesh` must be a jax.sharding.Mesh, got {type(mesh).__name__}. Build one with "
            f"Mesh(jax.devices(), ('data',))."
        )
    if "data" in mesh.axis_names:
        return "data"
    if len(mesh.axis_names) == 1:
        return mesh.axis_names[0]
    raise UsageError(
        f"`mesh` has axes {mesh.axis_names} and none is named 'data'. Name the batch axis "
        f"'data', e.g. Mesh(devices, ('data',))."
    )


def check_loss(loss_fn: Any, params: Any, data: Data, batch_size: int | None) -> np.dtype:
    """Trace ``loss_fn`` once on a batch's shapes; it must return a scalar. Its dtype."""
    cache_key = (loss_fn, abstract((params, data)), batch_size)
    if cache_key in _LOSS_DTYPES:
        return _LOSS_DTYPES[cache_key]
    out = shapes_of_call(loss_fn, "loss_fn", params, batch_shapes(data, batch_size))
    if not hasattr(out, "shape") or out.shape != ():
        raise UsageError(
            f"`loss_fn` must return a scalar, got {getattr(out, 'shape', out)}. Reduce it, "
            f"e.g. with jnp.mean over the examples."
        )
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise UsageError(
            f"`loss_fn` must return a real floating scalar, got dtype {out.dtype}; are the "
            f"params integers? Pass float params, e.g. jnp.asarray(p, jnp.float32)."
        )
    if len(_LOSS_DTYPES) > 256:
        _LOSS_DTYPES.clear()
    _LOSS_DTYPES[cache_key] = np.dtype(out.dtype)
    return np.dtype(out.dtype)


def check_params(params: Any, arg: str = "params") -> None:
    """Every leaf of ``params`` must hold floats: integers cannot take a gradient step."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        dtype = jnp.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.inexact):
            raise UsageError(
                f"`{arg}{jax.tree_util.keystr(path)}` has dtype {dtype}; parameters must be "
                f"floating point. Pass e.g. jnp.asarray(value, jnp.float32)."
            )
