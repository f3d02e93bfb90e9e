"""What one check compares, found by tracing the loss and the backprop once for shapes.

A backprop written in NumPy cannot be traced; it is then called on the host, point by
point, with float64 NumPy arrays (:func:`host_values`). A loss must be traceable: autodiff
differentiates it.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gdjax._validate import UsageError, check_same_structure
from gdjax.check.numerics import Plan, named_values
from gdjax.check.report import Row
from gdjax.check.subject import Subject, as_backprop, leaf_namer

ELEMENTS_UP_TO = 256  # fd="auto": element by element up to this many (params + probes)

_TRACER_ERRORS = (
    jax.errors.TracerArrayConversionError,
    jax.errors.ConcretizationTypeError,
    jax.errors.TracerBoolConversionError,
    jax.errors.TracerIntegerConversionError,
)


def _hand_shapes(subject: Subject, params: Any, batch: Any) -> tuple[Any, bool]:
    try:
        hand = jax.eval_shape(lambda p, b: as_backprop(subject.backprop(p, b)), params, batch)
        return hand, False
    except _TRACER_ERRORS:
        pass  # NumPy inside the backprop: call it on the host
    out = as_backprop(subject.backprop(*_numpy_tree((params, batch))))
    return jax.tree_util.tree_map(np.asarray, out), True


def _numpy_tree(tree: Any) -> Any:
    return jax.tree_util.tree_map(lambda x: np.array(x, copy=True), tree)


def host_values(subject: Subject, plan: Plan, stacked: tuple[Any, Any], n: int) -> Any:
    """The hand-written backprop called on the host at each of ``n`` stacked points."""
    outs = []
    for i in range(n):
        point = jax.tree_util.tree_map(lambda x, i=i: np.array(x[i], copy=True), stacked)
        out = as_backprop(subject.backprop(*point))
        outs.append(jax.tree_util.tree_map(lambda x: np.asarray(x, np.float64), out))
    return jax.tree_util.tree_map(lambda *xs: np.stack(xs), *outs)


def _shape_rows(
    subject: Subject, hand: Any, params: Any
) -> tuple[list[int], list[Row]]:
    """Which gradient leaves compare; a transposed leaf becomes a FAIL row of its own."""
    shapeless = jax.tree_util.tree_map(lambda _: 0, hand.grads)
    check_same_structure(
        "the grads returned by backprop", shapeless,
        jax.tree_util.tree_map(lambda _: 0, params), "params",
    )
    if callable(subject.leaf_names):
        check_same_structure("the grads returned by backprop", hand.grads, params, "params")
        return list(range(len(jax.tree_util.tree_leaves(params)))), []
    names = list(leaf_namer(subject, params)(params))
    keep, bad = [], []
    pairs = zip(jax.tree_util.tree_leaves(hand.grads), jax.tree_util.tree_leaves(params))
    for i, (h, p) in enumerate(pairs):
        hs, ps = jnp.shape(h), jnp.shape(p)
        if hs == ps:
            keep.append(i)
        elif len(ps) == 2 and hs == ps[::-1]:
            bad.append(Row(f"d{subject.symbol}/d{names[i]}", "grad", "FAIL", cause="transpose",
                           note=f"the hand-written gradient has shape {hs}, the transpose of "
                           f"{names[i]}'s {ps}"))
        else:
            check_same_structure("the grads returned by backprop", hand.grads, params, "params")
    return keep, bad


def _adjoint_rows(
    subject: Subject, hand: Any, named: dict
) -> tuple[dict[str, tuple[int, ...]], list[Row], list[str]]:
    sym = subject.symbol
    probed: dict[str, tuple[int, ...]] = {}
    bad: list[Row] = []
    for label, adjoint in hand.adjoints.items():
        row = f"d{sym}/d{label}"
        found = named.get(label, [])
        if not found:
            bad.append(Row(row, "adjoint", "UNPROBED",
                           note=f"the loss never tags an intermediate with gd.name(..., "
                           f"{label!r}), so autodiff cannot see it; tag it in the loss to "
                           f"check this adjoint"))
        elif len(found) > 1:
            bad.append(Row(row, "adjoint", "UNPROBED",
                           note=f"gd.name(..., {label!r}) is used {len(found)} times in the "
                           f"loss; give each intermediate its own name"))
        elif jnp.shape(found[0]) != jnp.shape(adjoint):
            shape, want = jnp.shape(adjoint), jnp.shape(found[0])
            transposed = len(want) == 2 and shape == want[::-1]
            bad.append(Row(row, "adjoint", "FAIL", cause="transpose" if transposed else "other",
                           note=f"the hand-written adjoint has shape {shape} but the "
                           f"intermediate {label} has shape {want}"))
        else:
            probed[label] = jnp.shape(found[0])
    for label in subject.declared_adjoints:
        if label not in hand.adjoints:
            bad.append(Row(f"d{sym}/d{label}", "adjoint", "FAIL", cause="other",
                           note=f"the model lists {label!r} in adjoint_names but its backprop "
                           f"returns no adjoint for it"))
    notes = [
        f"the loss names {label!r} with gd.name but the backprop returns no adjoint "
        f"d{sym}/d{label}, so that step of the derivation is not checked; return it in the "
        f"adjoints dict to check it"
        for label in named
        if label not in hand.adjoints and label not in subject.declared_adjoints
    ]
    return probed, bad, notes


def make_plan(
    subject: Subject, params: Any, batch: Any, fd: str = "auto", directions: int = 2
) -> Plan:
    """Trace the backprop and the loss once for shapes; decide which adjoints to probe."""
    try:
        loss_shape = jax.eval_shape(subject.loss, params, batch)
    except _TRACER_ERRORS as err:
        raise UsageError(
            f"{subject.id}: the loss function cannot be traced by JAX ({type(err).__name__}): "
            f"autodiff differentiates it, so write it with jax.numpy (jnp) instead of NumPy; "
            f"the backprop may stay in NumPy."
        ) from None
    except (KeyError, IndexError):  # a key or layer the params lack: say which, not JAX
        from gdjax.models._base import shapes_of_call

        shapes_of_call(subject.loss, "loss_fn", params, batch)
        raise
    if jnp.shape(loss_shape) != ():
        raise ValueError(
            f"{subject.id}: loss(params, batch) has shape {jnp.shape(loss_shape)}; it must be "
            f"a scalar (sum or average over examples)."
        )
    hand, host = _hand_shapes(subject, params, batch)
    if jnp.shape(hand.loss) != ():
        raise ValueError(
            f"{subject.id}: the backprop's loss has shape {jnp.shape(hand.loss)}; it must be a "
            f"scalar."
        )
    keep, bad_leaves = _shape_rows(subject, hand, params)
    forward: list[str] = []

    def recorded(p: Any, b: Any) -> dict[str, list[Any]]:
        store = named_values(subject.loss, p, b)
        forward.extend(store)  # the order of the gd.name calls: the forward pass
        return store

    named = jax.eval_shape(recorded, params, batch)
    probed, bad, notes = _adjoint_rows(subject, hand, named)
    to_named, order = leaf_namer(subject, params), []

    def named_grads(tree: Any) -> dict[str, jax.Array]:
        out = to_named(tree)
        order.extend(out)  # eval_shape hands dicts back sorted; keep the plugin's order
        return out

    grads = jax.eval_shape(named_grads, params)
    if not callable(subject.leaf_names):
        order = [order[i] for i in keep]
    hand_named = (
        jax.eval_shape(to_named, hand.grads) if callable(subject.leaf_names)
        else dict(zip(list(to_named(params)), jax.tree_util.tree_leaves(hand.grads)))
    )
    sym = subject.symbol
    layout = [(sym, "loss", 1)] if subject.check_loss else []
    layout += [(f"d{sym}/d{k}", "grad", math.prod(jnp.shape(grads[k]))) for k in order]
    layout += [(f"d{sym}/d{k}", "adjoint", math.prod(shape)) for k, shape in probed.items()]
    shapes = ([()] if subject.check_loss else []) + [jnp.shape(grads[k]) for k in order]
    shapes += list(probed.values())
    dtypes = ([str(jnp.result_type(hand.loss))] if subject.check_loss else [])
    dtypes += [str(jnp.result_type(hand_named[k])) for k in order]
    dtypes += [str(jnp.result_type(hand.adjoints[k])) for k in probed]
    size = sum(math.prod(jnp.shape(x)) for x in jax.tree_util.tree_leaves(params))
    size += sum(math.prod(s) for s in probed.values())
    if fd == "auto":
        fd = "elements" if size <= ELEMENTS_UP_TO or callable(subject.leaf_names) else "directions"
    if fd == "directions" and callable(subject.leaf_names):
        raise UsageError(
            f"{subject.id}: fd='directions' needs one row per params leaf, but the model's "
            f"leaf_names is a function; use fd='elements'."
        )
    return Plan(
        tuple(layout), tuple(order), probed, tuple(bad_leaves + bad),
        tuple(tuple(s) for s in shapes), tuple(dtypes), tuple(forward), tuple(notes),
        host, fd, tuple(keep), directions,
    )
