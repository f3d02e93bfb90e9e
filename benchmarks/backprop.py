"""Section ``backprop``: each registry model's hand-written backprop against autodiff.

Claim (d): ``model.backprop`` costs what ``jax.value_and_grad`` of its loss costs, both
jitted (goal ≤ 1.1, on the compute inside a compiled loop).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from ._timing import Row, cost_row, median, time_side_by_side

NAME = "backprop"

#: Sizes for ``--quick``: a smoke test, not a measurement.
QUICK: dict[str, Any] = {"big_m": None, "repeats": 3, "inner": 10, "number": 2}


def _tile_batch(batch: Any, m: int) -> Any | None:
    """The batch repeated along axis 0 to ``m`` examples, or None if it has no such axis."""
    leaves = jax.tree_util.tree_leaves(batch)
    if not leaves or any(jnp.ndim(x) == 0 for x in leaves):
        return None
    sizes = {jnp.shape(x)[0] for x in leaves}
    if len(sizes) != 1 or sizes.pop() < 2:
        return None

    def tile(x: jax.Array) -> jax.Array:
        reps = math.ceil(m / x.shape[0])
        return jnp.concatenate([x] * reps, axis=0)[:m]

    return jax.tree_util.tree_map(tile, batch)


def _gd_loop(grad_fn: Callable) -> Callable:
    """``K`` GD steps with ``grad_fn`` inside one compiled loop (compute, not dispatch)."""

    @jax.jit
    def loop(params, batch, lr, k):
        def body(_, p):
            _, g = grad_fn(p, batch)
            return jax.tree_util.tree_map(lambda a, d: a - lr.astype(a.dtype) * d, p, g)

        return jax.lax.fori_loop(0, k, body, params)

    return loop


def bench(
    *,
    models: Sequence[str] | None = None,
    big_m: int | None = 10_000,
    repeats: int = 21,
    inner: int = 200,
    number: int = 10,
) -> tuple[list[Row], dict[str, Any]]:
    """(d) each model's hand-written backprop against ``jax.value_and_grad`` of its loss.

    Per model and batch (the example point; and, where the batch has an example axis, the
    example repeated to ``big_m`` rows) two rows:

    * ``call``: one jitted call per gradient, as a user would call it, timed over
      ``number`` calls in a row (at the example point this is mostly dispatch, the same
      for both);
    * ``in-loop``: ``inner`` gradient steps inside one compiled ``fori_loop``, divided by
      ``inner``: the compute that ``gd.fit`` runs. The goal (≤ 1.1) is on this row.

    Only ``(loss, grads)`` of backprop is used, as ``gd.fit`` uses it; XLA drops the
    adjoint outputs that nothing reads.
    """
    from gdjax.models import REGISTRY

    ids = list(REGISTRY) if models is None else list(models)
    rows: list[Row] = []
    skipped: dict[str, str] = {}
    for mid in ids:
        model = REGISTRY[mid]
        params, batch = model.example()
        points = [("example", batch)]
        big = None if big_m is None else _tile_batch(batch, big_m)
        if big is not None:
            points.append((f"m={big_m}", big))
        try:
            for where, data in points:
                rows.extend(_backprop_rows(model, params, data, where, repeats, inner, number))
        except Exception as err:  # a model still being written must not stop the bench
            skipped[mid] = f"{type(err).__name__}: {err}"
    return rows, {"inner_steps": inner, "big_m": big_m, "skipped": skipped}


def _backprop_rows(
    model: Any, params: Any, batch: Any, where: str, repeats: int, inner: int, number: int
) -> list[Row]:
    def manual(p, b):
        out = model.backprop(p, b)
        return out.loss, out.grads

    auto = jax.value_and_grad(model.loss)
    call_m, call_a = jax.jit(manual), jax.jit(auto)
    loop_m, loop_a = _gd_loop(manual), _gd_loop(auto)
    lr = jnp.float32(1e-6)
    k = jnp.int32(inner)
    times = time_side_by_side(
        {"call manual": lambda: call_m(params, batch), "call auto": lambda: call_a(params, batch)},
        repeats=repeats,
        number=number,
    )
    times |= time_side_by_side(
        {
            "loop manual": lambda: loop_m(params, batch, lr, k),
            "loop auto": lambda: loop_a(params, batch, lr, k),
        },
        repeats=repeats,
    )
    med = {k_: median(v) for k_, v in times.items()}
    return [
        cost_row(
            NAME,
            f"{model.id} backprop / autodiff ({where}, in-loop)",
            "backprop",
            "jax.value_and_grad",
            med["loop manual"] / inner,
            med["loop auto"] / inner,
            unit="step",
            goal="<= 1.1",
        ),
        cost_row(
            NAME,
            f"{model.id} backprop / autodiff ({where}, jit call)",
            "backprop",
            "jax.value_and_grad",
            med["call manual"],
            med["call auto"],
            unit="call",
        ),
    ]
