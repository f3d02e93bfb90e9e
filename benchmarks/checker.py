"""Section ``checker``: ``gd.check_backprop`` vs ``jax.test_util.check_grads`` vs
``torch.autograd.gradcheck`` on the same hand-written backprop of a tanh MLP.

The model: ``L = ½·mean_i ‖tanh(x_i W1 + b1) W2 + b2 − y_i‖²``, 32 examples, float64, at
about 10³, 10⁴, 10⁵ and 10⁶ parameters (``1000-1000-10`` is 1,011,010). The hand-written
backprop is the same formula for every tool: gdjax takes it as ``(loss_fn, backprop_fn)``;
``check_grads`` checks it as the backward rule of a ``jax.custom_vjp`` (how one checks a
hand-written VJP with it); ``gradcheck`` as the ``backward`` of a ``torch.autograd.Function``
(full mode: the whole Jacobian by finite differences, only where that takes under a minute;
fast mode: one random direction). torch is optional: without it those rows are skipped.

Each tool runs once per case, cold (its compile included, JAX's import excluded), on
the correct backprop and on planted errors: one element of dW1 off by 1%, db2 doubled,
dW2 with its sign flipped. A row's ratio is gdjax's time over the other tool's; its note
says what each tool reported.
"""

from __future__ import annotations

import math
import re
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._timing import Row, cost_row

NAME = "checker"

#: Sizes for ``--quick``: a smoke test, not a measurement.
QUICK: dict[str, Any] = {"sizes": ((30, 30, 3),), "bugs": ("one",), "full_limit": 0}

SIZES = ((30, 30, 3), (100, 90, 10), (300, 300, 10), (1000, 1000, 10))
BUGS = ("one", "factor", "sign")


def _forward(p: dict, x: Any, xp: Any) -> tuple[Any, Any]:
    h = xp.tanh(x @ p["W1"] + p["b1"])
    return h, h @ p["W2"] + p["b2"]


def loss(p: dict, batch: tuple) -> Any:
    x, y = batch
    _, out = _forward(p, x, jnp)
    return 0.5 * jnp.mean(jnp.sum((out - y) ** 2, axis=1))


def make_backprop(bug: str | None, xp: Any = jnp) -> Any:
    """The hand-written backprop (``xp`` = jax.numpy or torch), with an optional planted bug."""

    def backprop(p: dict, batch: tuple) -> tuple[Any, dict]:
        x, y = batch
        h, out = _forward(p, x, xp)
        d = (out - y) / x.shape[0]
        dz = (d @ p["W2"].T) * (1 - h**2)
        grads = {"W1": x.T @ dz, "b1": dz.sum(0), "W2": h.T @ d, "b2": d.sum(0)}
        if bug == "one":
            if xp is jnp:
                grads["W1"] = grads["W1"].at[7, 3].multiply(1.01)
            else:
                grads["W1"] = grads["W1"].clone()
                grads["W1"][7, 3] *= 1.01
        elif bug == "factor":
            grads["b2"] = 2 * grads["b2"]
        elif bug == "sign":
            grads["W2"] = -grads["W2"]
        return 0.5 * ((out - y) ** 2).sum(1).mean(), grads

    return backprop


def problem(n_in: int, n_h: int, n_out: int, m: int = 32, seed: int = 0) -> tuple[dict, tuple]:
    rng = np.random.default_rng(seed)
    params = {"W1": rng.standard_normal((n_in, n_h)) / math.sqrt(n_in), "b1": np.zeros(n_h),
              "W2": rng.standard_normal((n_h, n_out)) / math.sqrt(n_h), "b2": np.zeros(n_out)}
    return params, (rng.standard_normal((m, n_in)), rng.standard_normal((m, n_out)))


def run_gdjax(params: dict, batch: tuple, bug: str | None) -> tuple[float, str]:
    import gdjax as gd

    t0 = time.perf_counter()
    report = gd.check_backprop((loss, make_backprop(bug)), params, batch)
    seconds = time.perf_counter() - t0
    if report.ok:
        return seconds, "ok"
    row = next(r for r in report.rows if r.name == report.first_wrong)
    where = f"[{', '.join(map(str, row.index))}]" if row.index else ""
    return seconds, f"{report.first_wrong}{where}: {row.cause}"


def run_check_grads(params: dict, batch: tuple, bug: str | None) -> tuple[float, str]:
    from jax.test_util import check_grads

    backprop = make_backprop(bug)

    @jax.custom_vjp
    def f(p: dict) -> jax.Array:
        return loss(p, batch)

    def fwd(p: dict) -> tuple[jax.Array, dict]:
        return loss(p, batch), p

    def bwd(p: dict, g: jax.Array) -> tuple[dict]:
        return (jax.tree_util.tree_map(lambda d: g * d, backprop(p, batch)[1]),)

    f.defvjp(fwd, bwd)
    with jax.enable_x64(True):
        p64 = jax.tree_util.tree_map(jnp.asarray, params)
        t0 = time.perf_counter()
        try:
            check_grads(f, (p64,), order=1, modes=("rev",))
            verdict = "ok"
        except AssertionError as err:  # its message names no leaf, only a number
            verdict = "FAIL: " + " ".join(str(err).split()[:6])
        return time.perf_counter() - t0, verdict


def _torch_fn(bug: str | None, batch: tuple, names: list[str]) -> Any:
    import torch

    x, y = (torch.as_tensor(a) for a in batch)
    backprop = make_backprop(bug, torch)

    class MLP(torch.autograd.Function):
        @staticmethod
        def forward(ctx, *leaves):
            ctx.save_for_backward(*leaves)
            return backprop(dict(zip(names, leaves)), (x, y))[0]

        @staticmethod
        def backward(ctx, g):
            grads = backprop(dict(zip(names, ctx.saved_tensors)), (x, y))[1]
            return tuple(g * grads[k] for k in names)

    return MLP.apply


class _GaveUp(Exception):
    pass


def _give_up(signum: int, frame: Any) -> None:
    raise _GaveUp


def run_gradcheck(params: dict, batch: tuple, bug: str | None, fast: bool,
                  limit: int = 60) -> tuple[float, str]:
    """``gradcheck`` once; given up after ``limit`` seconds (on a failure, even fast mode
    computes the failing input's whole Jacobian, one column at a time, for its message)."""
    import signal

    import torch

    names = list(params)
    leaves = [torch.tensor(params[k], dtype=torch.float64, requires_grad=True) for k in names]
    fn = _torch_fn(bug, batch, names)
    old = signal.signal(signal.SIGALRM, _give_up)
    signal.alarm(limit)
    t0 = time.perf_counter()
    try:
        torch.autograd.gradcheck(fn, leaves, fast_mode=fast)
        verdict = "ok"
    except _GaveUp:
        verdict = f"no answer within {limit} s"
    except RuntimeError as err:  # GradcheckError
        found = re.search(r"with respect to input (\d+)", str(err))
        verdict = "FAIL" + (f": input {names[int(found.group(1))]} (no index)" if found else
                            ": " + " ".join(str(err).split())[:50])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    return time.perf_counter() - t0, verdict


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        return None
    return torch


def bench(
    *, sizes: tuple = SIZES, bugs: tuple = BUGS, bug_sizes: tuple | None = None,
    full_limit: int = 20_000, log: Any = None,
) -> tuple[list[Row], dict[str, Any]]:
    """Every tool on every size (correct backprop), and on ``bugs`` at ``bug_sizes``
    (default: the smallest and the largest size)."""
    torch = _torch()
    bug_sizes = bug_sizes if bug_sizes is not None else (sizes[0], sizes[-1])
    records: list[dict[str, Any]] = []
    rows: list[Row] = []
    for shape in sizes:
        params, batch = problem(*shape)
        n = sum(int(np.size(v)) for v in params.values())
        for bug in (None, *(bugs if shape in bug_sizes else ())):
            case = bug or "correct"
            tg, vg = run_gdjax(params, batch, bug)
            if log:
                log(f"{n} {case} gdjax {tg:.2f} {vg}")
            tc, vc = run_check_grads(params, batch, bug)
            if log:
                log(f"{n} {case} check_grads {tc:.2f} {vc}")
            records += [
                {"params": n, "case": case, "tool": "gdjax.check_backprop", "s": tg, "says": vg},
                {"params": n, "case": case, "tool": "jax check_grads", "s": tc, "says": vc},
            ]
            rows.append(cost_row(NAME, f"{n:,} params, {case}: gdjax vs check_grads",
                                 "gdjax", "check_grads", tg, tc, unit="call",
                                 note=f"gdjax: {vg}; check_grads: {vc}"))
            if torch is None:
                continue
            tf, vf = run_gradcheck(params, batch, bug, fast=True)
            if log:
                log(f"{n} {case} gradcheck fast {tf:.2f} {vf}")
            records.append({"params": n, "case": case, "tool": "gradcheck fast", "s": tf,
                            "says": vf})
            rows.append(cost_row(NAME, f"{n:,} params, {case}: gdjax vs gradcheck fast",
                                 "gdjax", "gradcheck(fast_mode)", tg, tf, unit="call",
                                 note=f"gdjax: {vg}; gradcheck fast: {vf}"))
            if n <= full_limit:
                tfull, vfull = run_gradcheck(params, batch, bug, fast=False)
                records.append({"params": n, "case": case, "tool": "gradcheck full",
                                "s": tfull, "says": vfull})
                rows.append(cost_row(NAME, f"{n:,} params, {case}: gdjax vs gradcheck full",
                                     "gdjax", "gradcheck", tg, tfull, unit="call",
                                     note=f"gdjax: {vg}; gradcheck full: {vfull}"))
    info = {"records": records, "torch": None if torch is None else torch.__version__,
            "skipped": "" if torch is not None else "torch rows (torch not installed)"}
    return rows, info


def markdown(records: list[dict[str, Any]]) -> str:
    """The records as the table of docs/checking.md."""
    lines = ["| params | case | tool | seconds | says |", "|---:|---|---|---:|---|"]
    for r in records:
        lines.append(f"| {r['params']:,} | {r['case']} | {r['tool']} | {r['s']:.2f} | "
                     f"{r['says']} |")
    return "\n".join(lines)
