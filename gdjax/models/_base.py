"""The model protocol shared by every document model.

A model is a handful of pure functions of a parameter pytree (a dict of arrays named
as the documents name them):

* ``init(key, ...) -> params``
* ``loss(params, batch) -> scalar``: pure JAX, differentiable by ``jax.grad``; every
  intermediate a document names is tagged with :func:`gdjax.name`, so the checker can
  probe its adjoint and the graph explainer can label it;
* ``backprop(params, batch) -> Backprop``: the chain rule written out by hand, right to
  left, exactly as the document derives it (no ``jax.grad``/``vjp``/``jvp`` inside);
* ``example() -> (params, batch)``: a concrete point, the document's numbers where it
  prints them;
* ``predict(params, x)`` where the model has a prediction.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gdjax._validate import UsageError, check_finite

__all__ = [
    "Backprop", "Model", "check_layout", "shapes_of_call", "uniform_fan_in", "unpack_xy",
]  # fmt: skip

Params = Any
Batch = Any


class Backprop(NamedTuple):
    """What a hand-written backward pass returns.

    Attributes:
      loss: the scalar loss at ``(params, batch)``.
      grads: ``dL/dparams``, the same pytree as ``params``.
      adjoints: ``{name: dL/d(name)}`` for the intermediates the document names
        (``"u"``, ``"v"`` of G1; ``"z"``, ``"a"`` of G2; ...), each with the shape of the
        intermediate itself.
    """

    loss: jax.Array
    grads: Params
    adjoints: dict[str, jax.Array]


@dataclass(frozen=True)
class Model:
    """One document model: its pure functions and where it comes from.

    Attributes:
      id: registry id, ``"G1"`` ... ``"C2"``.
      title: a one-line description.
      source: the seed document it comes from (file name under ``shared/seeds``).
      init, loss, backprop, example, predict: the protocol above.
      adjoint_names: the intermediates whose adjoints ``backprop`` reports.
      doc: the docs page with its equations.
      loss_symbol: the loss's letter in the document (``"J"`` for G1, ``"f"`` for S1), so
        the checker's rows read ``dJ/db``.
      leaf_names: names for the params leaves in the checker's rows: a sequence, one per
        leaf in pytree order, or a traceable ``to_named(tree) -> {name: array}`` (N1's
        ``w1 … w10``); None names a leaf by its path (``W1``, ``layers[1].W``).
      extras: what else a model carries for its experiments and tests (N1's learning
        rate, S1's printed derivative); nothing in the library reads it.
    """

    id: str
    title: str
    source: str
    init: Callable[..., Params]
    loss: Callable[[Params, Batch], jax.Array]
    backprop: Callable[[Params, Batch], Backprop]
    example: Callable[[], tuple[Params, Batch]]
    predict: Callable[..., jax.Array] | None = None
    adjoint_names: tuple[str, ...] = ()
    doc: str = ""
    loss_symbol: str = "L"
    leaf_names: Sequence[str] | Callable[[Params], Mapping[str, jax.Array]] | None = None
    extras: Mapping[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"<gdjax model {self.id}: {self.title}>"


def check_layout(
    model: str,
    params: Params,
    param_spec: Mapping[str, Sequence[str | int]],
    arrays: Mapping[str, Any] | None = None,
    array_spec: Mapping[str, Sequence[str | int]] | None = None,
) -> dict[str, int]:
    """Check params and batch arrays against symbolic shapes; return the dimensions.

    ``param_spec`` maps each parameter name to its shape written with symbols, e.g.
    ``{"W1": ("k", "n"), "b1": ("k",), "w2": ("k",), "b2": ()}``; ``array_spec`` does the
    same for the batch, e.g. ``{"X": ("m", "n"), "y": ("m",)}``. A symbol takes its size
    from the first array that has it, and every later use must agree. Works on tracers
    (shapes are static); the NaN check of the batch only runs on concrete arrays.

    Raises:
      TypeError: ``params`` is not a dict with exactly the expected keys.
      ValueError: a rank or size disagrees, or the batch holds NaN/inf.
    """
    if not isinstance(params, Mapping):
        raise UsageError(
            f"{model}: `params` must be a dict with keys {sorted(param_spec)}, got "
            f"{type(params).__name__}. Build it with the model's init() or example()."
        )
    if set(params) != set(param_spec):
        missing = sorted(set(param_spec) - set(params))
        extra = sorted(set(params) - set(param_spec))
        raise UsageError(
            f"{model}: `params` keys do not match the model. Missing: {missing}; "
            f"unexpected: {extra}. Expected exactly {sorted(param_spec)}."
        )
    dims: dict[str, int] = {}
    where: dict[str, str] = {}
    items = [(f"params[{k!r}]", params[k], param_spec[k]) for k in param_spec]
    if arrays is not None and array_spec is not None:
        items += [(f"batch {k}", arrays[k], array_spec[k]) for k in array_spec]
    for label, x, spec in items:
        shape = jnp.shape(x)
        if len(shape) != len(spec):
            want = "(" + ", ".join(map(str, spec)) + ("," if len(spec) == 1 else "") + ")"
            raise UsageError(
                f"{model}: {label} has shape {shape}, expected {want} "
                f"(rank {len(spec)}). Reshape it, e.g. x.reshape({want})."
            )
        for sym, size in zip(spec, shape):
            if isinstance(sym, int):
                if size != sym:
                    raise UsageError(f"{model}: {label} has shape {shape}; axis must be {sym}.")
            elif sym in dims and dims[sym] != size:
                raise UsageError(
                    f"{model}: {label} has shape {shape}, so {sym} = {size}, but {where[sym]} "
                    f"says {sym} = {dims[sym]}. Make the shapes agree."
                )
            else:
                dims.setdefault(sym, size)
                where.setdefault(sym, label)
    if arrays is not None:
        check_finite("batch", dict(arrays))
    return dims


def unpack_xy(model: str, batch: Any, names: tuple[str, str] = ("X", "y")) -> Batch:
    """Split a ``(X, y)`` batch into two arrays, with a clear error for anything else."""
    if not isinstance(batch, tuple | list) or len(batch) != 2:
        raise UsageError(
            f"{model}: `batch` must be a pair ({names[0]}, {names[1]}), got "
            f"{type(batch).__name__}. Pass e.g. batch = ({names[0]}, {names[1]}); "
            f"model.example() returns one."
        )
    return jnp.asarray(batch[0]), jnp.asarray(batch[1])


def uniform_fan_in(
    key: jax.Array, shape: tuple[int, ...], fan_in: int, dtype: jnp.dtype
) -> jax.Array:
    """Draw from U(−1/√fan_in, 1/√fan_in), the rule ``torch.nn.Linear`` uses for both
    its weights and its bias (so biases start small but not at zero)."""
    bound = 1.0 / fan_in**0.5
    return jax.random.uniform(key, shape, dtype, -bound, bound)


def _shapes(tree: Any) -> str:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return ", ".join(f"{jax.tree_util.keystr(p) or '.'}: {tuple(jnp.shape(x))}" for p, x in leaves)


def shapes_of_call(fn: Callable, what: str, params: Any, batch: Any) -> Any:
    """``jax.eval_shape(fn, params, batch)``; a loss that cannot run on these inputs (a key
    the params lack, a layer index past the end, shapes that do not fit) raises a
    :class:`UsageError` naming ``what`` and the inputs, not JAX's own error."""
    try:
        return jax.eval_shape(fn, params, batch)
    except KeyError as err:
        key = err.args[0] if err.args else "?"
        have = sorted(params, key=str) if isinstance(params, Mapping) else type(params).__name__
        raise UsageError(
            f"`{what}` looks up the key {key!r}, which its input lacks: `params` has keys "
            f"{have}. Pass params (and batch) with every key the loss reads."
        ) from None
    except IndexError as err:
        raise UsageError(
            f"`{what}` indexes past the end of its input ({err}): params are "
            f"[{_shapes(params)}]. Pass as many layers/entries as the loss reads."
        ) from None
    except (TypeError, ValueError, AttributeError) as err:
        if isinstance(err, UsageError):
            raise
        raise UsageError(
            f"`{what}` cannot run on these inputs: {' '.join(str(err).split())[:300]} "
            f"(params: [{_shapes(params)}]; batch: [{_shapes(batch)}]). Make the shapes "
            f"agree, e.g. X of shape (m, n) with w of shape (n,)."
        ) from None
