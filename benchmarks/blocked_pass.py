"""Section ``pass``: a full-batch GD step of a linear model divided by one ``X @ w``.

Claim (c): the row-blocked :func:`gdjax.blocked.linear_value_and_grad` reads ``X`` once
per step, so its step costs about one ``X @ w`` (goal ≤ 1.3); autodiff's step reads it
twice. With several devices, also the one-pass step with the rows split over them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ._timing import Row, cost_row, fit_or_none, median, quiet, time_side_by_side

NAME = "pass"

#: Sizes for ``--quick``: a smoke test, not a measurement.
QUICK: dict[str, Any] = {"m": 20_000, "n": 100, "block_rows": (), "repeats": 3, "fit_steps": None}


def _logistic_loss(params: dict[str, jax.Array], batch: tuple[jax.Array, jax.Array]) -> jax.Array:
    """G3's loss written plainly: mean cross-entropy of z = Xw + b."""
    X, y = batch
    z = X @ params["w"] + params["b"]
    return jnp.mean(jax.nn.softplus(z) - y * z)


def _squared_loss(params: dict[str, jax.Array], batch: tuple[jax.Array, jax.Array]) -> jax.Array:
    """R2's loss written plainly: (1/m)‖Xw + b − y‖²."""
    X, y = batch
    return jnp.mean(jnp.square(X @ params["w"] + params["b"] - y))


def _gd_step(value_and_grad: Callable, learning_rate: float) -> Callable:
    """A jitted full step: gradient, then an optax SGD update (the step ``fit`` runs)."""
    opt = optax.sgd(learning_rate)

    @jax.jit
    def step(params, opt_state, batch):
        loss, grads = value_and_grad(params, batch)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


def bench(
    *,
    m: int = 400_000,
    n: int = 100,
    block_rows: Sequence[int] = (128, 256, 512, 1024, 2048, 4096),
    repeats: int = 21,
    fit_steps: tuple[int, int] | None = (5, 45),
) -> tuple[list[Row], dict[str, Any]]:
    """(c) time of a full-batch GD step divided by the time of one ``X @ w``.

    Rows: the autodiff step and the one-pass step for G3's logistic loss and R2's squared
    error, at the default block size; one row per tried ``block_rows`` (logistic); with
    more than one device, the one-pass step with the rows split over all of them; and,
    when :func:`gdjax.fit` is importable, fit's marginal time per step with the one-pass
    gradient, ``(t(T2) − t(T1)) / (T2 − T1)``, which leaves out fit's per-call work
    (``fit_steps=None`` leaves this row out).
    """
    from gdjax.blocked import (
        DEFAULT_BLOCK_BYTES,
        linear_value_and_grad,
        sharded_linear_value_and_grad,
    )

    kx, ky = jax.random.split(jax.random.key(0))
    X = jax.random.normal(kx, (m, n), jnp.float32)
    p = jax.nn.sigmoid(X[:, :4].sum(axis=1))
    y = (jax.random.uniform(ky, (m,)) < p).astype(jnp.float32)
    params = {"w": jnp.full((n,), 0.01, jnp.float32), "b": jnp.float32(0.0)}
    batch = (X, y)
    lr = 0.1
    opt_state = optax.sgd(lr).init(params)

    matvec = jax.jit(lambda X, w: X @ w)
    steps = {
        ("logistic", "autodiff"): _gd_step(jax.value_and_grad(_logistic_loss), lr),
        ("logistic", "one-pass"): _gd_step(linear_value_and_grad("logistic"), lr),
        ("squared", "autodiff"): _gd_step(jax.value_and_grad(_squared_loss), lr),
        ("squared", "one-pass"): _gd_step(linear_value_and_grad("squared"), lr),
    }
    for rows in block_rows:
        steps[("logistic", f"one-pass, block_rows={rows}")] = _gd_step(
            linear_value_and_grad("logistic", block_rows=rows), lr
        )
    fns: dict[str, Callable[[], Any]] = {"X @ w": lambda: matvec(X, params["w"])}
    for key, step in steps.items():
        fns[" ".join(key)] = lambda step=step: step(params, opt_state, batch)
    devices = jax.devices()
    if len(devices) > 1 and m % len(devices) == 0:
        mesh = jax.sharding.Mesh(np.array(devices), ("data",))
        split = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
        batch_split = jax.device_put(batch, split)
        sharded = _gd_step(sharded_linear_value_and_grad("logistic", mesh=mesh), lr)
        key = ("logistic", f"one-pass, rows split over {len(devices)} devices")
        steps[key] = sharded
        fns[" ".join(key)] = lambda: sharded(params, opt_state, batch_split)
    times = time_side_by_side(fns, repeats=repeats)
    t_mv = median(times["X @ w"])

    default_rows = max(1, DEFAULT_BLOCK_BYTES // (n * 4))
    label = {"logistic": "G3 logistic", "squared": "R2 squared"}
    rows_out = []
    for loss, kind in steps:
        t = median(times[f"{loss} {kind}"])
        context = kind.startswith("one-pass, block_rows")
        goal = "" if context or kind == "autodiff" else "<= 1.3"
        note = "" if context else f"block_rows={default_rows}" if kind == "one-pass" else ""
        rows_out.append(
            cost_row(
                NAME,
                f"{label[loss]} step / X@w ({kind})",
                f"{kind} step",
                "X @ w",
                t,
                t_mv,
                unit="call",
                goal=goal,
                note=note,
            )
        )

    fit_row = None
    if fit_steps is not None:
        fit_row = _fit_pass_row(X, y, params, lr, fit_steps, repeats=max(3, repeats // 4))
    if fit_row is not None:
        (t1, t2), (t_step, t_mv2) = fit_steps, fit_row
        rows_out.append(
            cost_row(
                NAME,
                "G3 logistic gd.fit step / X@w (one-pass)",
                "fit marginal step",
                "X @ w",
                t_step,
                t_mv2,
                unit="step",
                goal="<= 1.3",
                note=f"(t(T={t2}) - t(T={t1})) / {t2 - t1}",
            )
        )
    info = {
        "m": m,
        "n": n,
        "dtype": "float32",
        "bytes_of_X": m * n * 4,
        "default_block_rows": default_rows,
        "t_matvec_s": t_mv,
        "matvec_GB_per_s": m * n * 4 / t_mv / 1e9,
    }
    return rows_out, info


def _fit_pass_row(
    X: jax.Array,
    y: jax.Array,
    params: dict[str, jax.Array],
    lr: float,
    fit_steps: tuple[int, int],
    *,
    repeats: int,
) -> tuple[float, float] | None:
    """Marginal seconds per step of ``gd.fit`` with the one-pass gradient, and X@w's time."""
    fit = fit_or_none()
    if fit is None:
        return None
    from gdjax.blocked import linear_value_and_grad

    vg = linear_value_and_grad("logistic")
    opt = optax.sgd(lr)
    matvec = jax.jit(lambda X, w: X @ w)
    t1, t2 = fit_steps

    def run(steps: int) -> Any:
        with quiet():
            res = fit(_logistic_loss, params, opt, (X, y), steps=steps, value_and_grad=vg)
        return res.params

    times = time_side_by_side(
        {"mv": lambda: matvec(X, params["w"]), "t1": lambda: run(t1), "t2": lambda: run(t2)},
        repeats=repeats,
    )
    per_step = (median(times["t2"]) - median(times["t1"])) / (t2 - t1)
    return per_step, median(times["mv"])
