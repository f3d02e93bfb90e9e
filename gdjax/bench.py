r"""``gdjax bench``: speed claims as ratios, each measured side by side in one process.

Four sections (``--only`` picks a subset), each a set of rows ``candidate vs baseline``:

``fit``
    :func:`gdjax.fit` (one compiled ``lax.scan`` over the steps, progress bar and loss
    history on) against the common pattern, a Python loop calling a ``jax.jit``-ed optax
    step and appending the loss to a list, on N1 and G3. Ratio: loop time per step / fit
    time per step (goal ≥ 100 on N1).
``sweep``
    :func:`gdjax.sweep` over K learning rates (one vmapped program) against K
    :func:`gdjax.fit` calls one after another. Ratio: loop wall time / sweep wall time
    (goal ≥ 10 at K = 1024).
``pass``
    A full-batch step of logistic regression (G3) and least squares (R2) on
    ``m = 400_000, n = 100`` float32, divided by the time of one ``X @ w``: autodiff's step
    reads ``X`` twice, the row-blocked :func:`gdjax.blocked.linear_value_and_grad` once
    (goal ≤ 1.3); with several devices (``gdjax bench`` makes one CPU device per core),
    also the one-pass step with the rows split over them.
``backprop``
    Each registry model's hand-written ``backprop`` against ``jax.value_and_grad`` of its
    loss, both jitted. Ratio: backprop / autodiff (goal ≤ 1.1).

Method: every timed function is compiled and run once before timing; the candidates of a
row are run in interleaved rounds (A, B, then B, A, ...), so a slow spell of the machine
hits both; each time ends with ``block_until_ready``; a row reports the median of the rounds.
Absolute times depend on the machine (and on what else runs on it); the ratios are the
claims. See docs/performance.md.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = [
    "SECTIONS",
    "Row",
    "bench_backprop",
    "bench_fit",
    "bench_pass",
    "bench_sweep",
    "cli_bench",
    "format_table",
    "machine_info",
    "run",
    "time_side_by_side",
]


# --------------------------------------------------------------------------- timing


def _ready(out: Any) -> Any:
    return jax.block_until_ready(out)


def time_side_by_side(
    fns: Mapping[str, Callable[[], Any]], *, repeats: int, warmup: int = 1, number: int = 1
) -> dict[str, list[float]]:
    """Wall seconds per call of each zero-argument ``fn``, run in interleaved rounds.

    Each function is called ``warmup`` times first (compilation, caches), then ``repeats``
    rounds call every function in turn (in reverse order every other round, so none
    always runs first), ``number`` times back to back (as ``timeit`` does, for calls too
    short to time one by one), up to ``block_until_ready`` of the last result.

    Returns:
      ``{name: [seconds per call in round 1, ..., in round repeats]}``.
    """
    for fn in fns.values():
        for _ in range(warmup):
            _ready(fn())
    times: dict[str, list[float]] = {k: [] for k in fns}
    order = list(fns.items())
    for r in range(repeats):
        for k, fn in order if r % 2 == 0 else order[::-1]:
            t0 = time.perf_counter()
            for _ in range(number - 1):
                fn()
            _ready(fn())
            times[k].append((time.perf_counter() - t0) / number)
    return times


def _median(xs: Sequence[float]) -> float:
    return float(np.median(np.asarray(xs)))


class Row(NamedTuple):
    """One measured comparison: ``ratio = t_candidate / t_baseline`` or its inverse.

    Attributes:
      section: ``"fit"``, ``"sweep"``, ``"pass"`` or ``"backprop"``.
      name: what is compared, e.g. ``"N1 fit vs loop (float history)"``.
      candidate, baseline: the two things timed.
      t_candidate, t_baseline: their median seconds (per step, per call or per run, as
        ``unit`` says).
      unit: what one time covers (``"step"``, ``"call"``, ``"run"``).
      ratio: ``t_candidate / t_baseline`` for a ``≤`` goal (a cost), or
        ``t_baseline / t_candidate`` for a ``≥`` goal (a speed-up).
      goal: ``"<= 1.3"``, ``">= 100"`` or ``""`` (a row for context only).
      note: anything a reader needs to read the row.
    """

    section: str
    name: str
    candidate: str
    baseline: str
    t_candidate: float
    t_baseline: float
    unit: str
    ratio: float
    goal: str = ""
    note: str = ""

    @property
    def met(self) -> bool | None:
        """Whether the ratio meets the goal (``None`` for rows without one)."""
        if not self.goal:
            return None
        op, value = self.goal.split()
        return self.ratio <= float(value) if op == "<=" else self.ratio >= float(value)

    def to_dict(self) -> dict[str, Any]:
        return {**self._asdict(), "met": self.met}


def _cost_row(section: str, name: str, cand: str, base: str, tc: float, tb: float, **kw) -> Row:
    return Row(section, name, cand, base, tc, tb, ratio=tc / tb, **kw)


def _speedup_row(section: str, name: str, cand: str, base: str, tc: float, tb: float, **kw) -> Row:
    return Row(section, name, cand, base, tc, tb, ratio=tb / tc, **kw)


@contextlib.contextmanager
def _quiet() -> Iterator[io.StringIO]:
    """Send stdout and stderr (progress bars) to a buffer, so terminal I/O costs nothing."""
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        yield sink


# --------------------------------------------------------------------------- pass


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


def bench_pass(
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
    t_mv = _median(times["X @ w"])

    default_rows = max(1, DEFAULT_BLOCK_BYTES // (n * 4))
    label = {"logistic": "G3 logistic", "squared": "R2 squared"}
    rows_out = []
    for loss, kind in steps:
        t = _median(times[f"{loss} {kind}"])
        context = kind.startswith("one-pass, block_rows")
        goal = "" if context or kind == "autodiff" else "<= 1.3"
        note = "" if context else f"block_rows={default_rows}" if kind == "one-pass" else ""
        rows_out.append(
            _cost_row(
                "pass",
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
            _cost_row(
                "pass",
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
    fit = _fit_or_none()
    if fit is None:
        return None
    from gdjax.blocked import linear_value_and_grad

    vg = linear_value_and_grad("logistic")
    opt = optax.sgd(lr)
    matvec = jax.jit(lambda X, w: X @ w)
    t1, t2 = fit_steps

    def run(steps: int) -> Any:
        with _quiet():
            res = fit(_logistic_loss, params, opt, (X, y), steps=steps, value_and_grad=vg)
        return res.params

    times = time_side_by_side(
        {"mv": lambda: matvec(X, params["w"]), "t1": lambda: run(t1), "t2": lambda: run(t2)},
        repeats=repeats,
    )
    per_step = (_median(times["t2"]) - _median(times["t1"])) / (t2 - t1)
    return per_step, _median(times["mv"])


def _fit_or_none() -> Callable | None:
    try:
        from gdjax.train import fit
    except ImportError:
        return None
    return fit


def _sweep_or_none() -> Callable | None:
    try:
        from gdjax.train import sweep
    except ImportError:
        return None
    return sweep


# --------------------------------------------------------------------------- backprop


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


def bench_backprop(
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
    med = {k_: _median(v) for k_, v in times.items()}
    return [
        _cost_row(
            "backprop",
            f"{model.id} backprop / autodiff ({where}, in-loop)",
            "backprop",
            "jax.value_and_grad",
            med["loop manual"] / inner,
            med["loop auto"] / inner,
            unit="step",
            goal="<= 1.1",
        ),
        _cost_row(
            "backprop",
            f"{model.id} backprop / autodiff ({where}, jit call)",
            "backprop",
            "jax.value_and_grad",
            med["call manual"],
            med["call auto"],
            unit="call",
        ),
    ]


# --------------------------------------------------------------------------- fit


def _loop_run(
    loss_fn: Callable, params: Any, opt: optax.GradientTransformation, batch: Any, steps: int
) -> Callable[[bool], Any]:
    """The common pattern: a jitted optax step in a Python loop, with tqdm and a history.

    The returned ``run(sync)`` does ``steps`` steps; ``sync=True`` appends ``float(loss)``
    each step (a device sync per step, what most scripts do), ``sync=False`` keeps the
    device arrays and converts them once at the end.
    """
    from tqdm.auto import tqdm

    @jax.jit
    def step(params, opt_state, batch):
        loss, grads = jax.value_and_grad(loss_fn)(params, batch)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    def run(sync: bool) -> Any:
        p, s = params, opt.init(params)
        history: list[Any] = []
        for _ in tqdm(range(steps), file=sys.stderr, mininterval=0.1):
            p, s, loss = step(p, s, batch)
            history.append(float(loss) if sync else loss)
        if not sync:
            history = [float(x) for x in jax.device_get(history)]
        return p, history

    return run


def bench_fit(
    *,
    models: Sequence[str] = ("N1", "G3"),
    loop_steps: int = 2_000,
    fit_steps: tuple[int, int] = (20_000, 200_000),
    repeats: int = 5,
    learning_rate: float = 0.1,
) -> tuple[list[Row], dict[str, Any]]:
    """(a) ``gd.fit`` (progress on, ``record_every=1``) vs a Python loop of jitted steps.

    Times per step from warm runs (compilation left out: each program runs once before
    timing; compile times, first run minus a warm run, are in the info). Both sides draw a
    tqdm bar, sent to a buffer with the rest of the output. Two kinds of fit time:

    * ``whole run``: a run of ``T1 = fit_steps[0]`` steps divided by ``T1``, everything a
      call does included (validation, planning, the bar); the goal (≥ 100 on N1) is here;
    * ``marginal``: ``(t(T2) − t(T1)) / (T2 − T1)``, the cost of one more step.

    The loop is timed with ``float(loss)`` appended each step (``float history``: a sync
    per step, what most scripts do) and with the device scalars kept and converted at the
    end (``async history``).
    """
    from gdjax.models import REGISTRY

    fit = _fit_or_none()
    if fit is None:
        return [], {"skipped": "gdjax.train.fit is not available"}
    rows: list[Row] = []
    info: dict[str, Any] = {"loop_steps": loop_steps, "fit_steps": list(fit_steps)}
    info["compile_s"] = {}
    missing = [mid for mid in models if mid not in REGISTRY]
    if missing:
        info["skipped"] = f"models not in the registry yet: {missing}"
    for mid in (mid for mid in models if mid in REGISTRY):
        model_rows, compile_s = _fit_rows(
            fit, REGISTRY[mid], loop_steps, fit_steps, repeats, learning_rate
        )
        rows.extend(model_rows)
        info["compile_s"][mid] = compile_s
    return rows, info


def _fit_rows(
    fit: Callable,
    model: Any,
    loop_steps: int,
    fit_steps: tuple[int, int],
    repeats: int,
    learning_rate: float,
) -> tuple[list[Row], dict[str, float]]:
    """bench_fit's rows for one model, and its compile times."""
    t1, t2 = fit_steps
    params, batch = model.example()
    opt = optax.sgd(learning_rate)
    loop = _loop_run(model.loss, params, opt, batch, loop_steps)

    def run_fit(steps: int) -> Any:
        res = fit(model.loss, params, opt, batch, steps=steps, progress=True, record_every=1)
        return res.params, res.losses

    def timed(fn: Callable[[], Any]) -> float:
        t0 = time.perf_counter()
        _ready(fn())
        return time.perf_counter() - t0

    with _quiet():
        cold = {"fit": timed(lambda: run_fit(t1)), "loop": timed(lambda: loop(True))}
        times = time_side_by_side(
            {
                "fit T1": lambda: run_fit(t1),
                "fit T2": lambda: run_fit(t2),
                "loop sync": lambda: loop(True),
                "loop async": lambda: loop(False),
            },
            repeats=repeats,
        )
    med = {k: _median(v) for k, v in times.items()}
    compile_s = {"fit": cold["fit"] - med["fit T1"], "loop": cold["loop"] - med["loop sync"]}
    fit_times = {
        "whole run": med["fit T1"] / t1,
        "marginal": (med["fit T2"] - med["fit T1"]) / (t2 - t1),
    }
    rows = []
    for kind, label in (("loop sync", "float history"), ("loop async", "async history")):
        for fit_kind, t_fit in fit_times.items():
            rows.append(
                _speedup_row(
                    "fit",
                    f"{model.id} fit ({fit_kind}) vs jit loop ({label})",
                    f"gd.fit, {fit_kind}",
                    f"jit step in a loop, {label}",
                    t_fit,
                    med[kind] / loop_steps,
                    unit="step",
                    goal=">= 100" if model.id == "N1" and fit_kind == "whole run" else "",
                    note=f"fit T={t1}" if fit_kind == "whole run" else f"T={t1}..{t2}",
                )
            )
    return rows, compile_s


# --------------------------------------------------------------------------- sweep


def bench_sweep(
    *,
    model: str = "N1",
    k: int = 1024,
    steps: int = 100,
    learning_rate_range: tuple[float, float] = (1e-3, 1.0),
    time_budget_s: float = 120.0,
) -> tuple[list[Row], dict[str, Any]]:
    """(b) ``gd.sweep`` over ``k`` learning rates vs ``k`` ``gd.fit`` calls in a loop.

    The loop is what a user writes: ``for lr in lrs: gd.fit(..., optax.sgd(lr), ...)``;
    each side's first call (compilation) is timed apart, then one warm run of each is
    timed. If the loop's first calls show that ``k`` calls would take longer than
    ``time_budget_s``, it stops early and its time is scaled to ``k`` calls (the row's
    note says so). A second row compares with ``k`` calls of one warm ``fit`` (the same
    optimizer object every time, so nothing recompiles): the least any loop of ``fit``
    calls can cost.
    """
    from gdjax.models import REGISTRY

    fit, sweep = _fit_or_none(), _sweep_or_none()
    if fit is None or sweep is None:
        return [], {"skipped": "gdjax.train.fit/sweep are not available"}
    if model not in REGISTRY:
        return [], {"skipped": f"model {model} is not in the registry yet"}
    mdl = REGISTRY[model]
    params, batch = mdl.example()
    lo, hi = learning_rate_range
    lrs = np.geomspace(lo, hi, k).astype(np.float32)
    fixed_opt = optax.sgd(float(lrs[0]))

    def run_sweep() -> Any:
        res = sweep(mdl.loss, params, optax.sgd, batch, steps=steps, learning_rates=lrs)
        return res.losses

    def run_fit(opt: optax.GradientTransformation) -> Any:
        res = fit(mdl.loss, params, opt, batch, steps=steps, progress=False)
        return res.losses

    def timed(fn: Callable[[], Any]) -> float:
        t0 = time.perf_counter()
        _ready(fn())
        return time.perf_counter() - t0

    def timed_loop(make_opt: Callable[[float], optax.GradientTransformation]) -> tuple[float, int]:
        done, t0 = 0, time.perf_counter()
        for lr in lrs:
            _ready(run_fit(make_opt(float(lr))))
            done += 1
            if done >= 16 and (time.perf_counter() - t0) / done * k > time_budget_s:
                break
        return (time.perf_counter() - t0) / done * k, done

    with _quiet():
        sweep_cold = timed(run_sweep)
        sweep_warm = timed(run_sweep)
        fit_first = timed(lambda: run_fit(optax.sgd(float(lrs[0]))))
        loop_s, done = timed_loop(optax.sgd)
        fixed_first = timed(lambda: run_fit(fixed_opt))
        cached_s, cached_done = timed_loop(lambda _: fixed_opt)

    def note(n: int) -> str:
        return "" if n == k else f"measured {n} calls, scaled to {k}"

    rows = [
        _speedup_row(
            "sweep",
            f"{model} sweep of {k} learning rates vs {k} fit calls",
            "gd.sweep",
            "gd.fit(optax.sgd(lr)) in a loop",
            sweep_warm,
            loop_s,
            unit="run",
            goal=">= 10",
            note=note(done),
        ),
        _speedup_row(
            "sweep",
            f"{model} sweep of {k} learning rates vs {k} warm fit calls",
            "gd.sweep",
            "gd.fit, one optimizer, no recompiles",
            sweep_warm,
            cached_s,
            unit="run",
            note=note(cached_done),
        ),
    ]
    info = {
        "model": model,
        "k": k,
        "steps": steps,
        "sweep_cold_s": sweep_cold,
        "sweep_warm_s": sweep_warm,
        "loop_first_call_s": fit_first,
        "loop_calls_measured": done,
        "loop_s": loop_s,
        "warm_fit_first_call_s": fixed_first,
        "warm_fit_calls_measured": cached_done,
        "warm_fit_loop_s": cached_s,
    }
    return rows, info


# --------------------------------------------------------------------------- driver

SECTIONS: dict[str, Callable[..., tuple[list[Row], dict[str, Any]]]] = {
    "fit": bench_fit,
    "sweep": bench_sweep,
    "pass": bench_pass,
    "backprop": bench_backprop,
}

#: Sizes for ``--quick``: a smoke test of the harness, not a measurement.
QUICK: dict[str, dict[str, Any]] = {
    "fit": {"loop_steps": 50, "fit_steps": (100, 1000), "repeats": 2},
    "sweep": {"k": 8, "steps": 10, "time_budget_s": 5.0},
    "pass": {"m": 20_000, "n": 100, "block_rows": (), "repeats": 3, "fit_steps": None},
    "backprop": {"big_m": None, "repeats": 3, "inner": 10, "number": 2},
}


def machine_info() -> dict[str, Any]:
    """Where the numbers were taken."""
    dev = jax.devices()[0]
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "device": getattr(dev, "device_kind", str(dev)),
        "device_count": jax.device_count(),
        "loadavg_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan"),
    }


def _parse_only(only: str | Sequence[str] | None) -> list[str]:
    if only is None:
        return list(SECTIONS)
    names = only.split(",") if isinstance(only, str) else list(only)
    names = [s.strip() for s in names if s.strip()]
    unknown = [s for s in names if s not in SECTIONS]
    if unknown or not names:
        raise ValueError(
            f"`--only` must be a comma-separated subset of {','.join(SECTIONS)}, got "
            f"{only!r}. Example: --only pass,backprop"
        )
    return names


def run(
    only: str | Sequence[str] | None = None,
    *,
    quick: bool = False,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the chosen sections and return ``{"machine", "quick", "sections", "rows"}``.

    ``sections[name]`` holds that section's info and its rows (as dicts); ``rows`` is every
    row of every section, in order.
    """
    names = _parse_only(only)
    result: dict[str, Any] = {"machine": machine_info(), "quick": quick, "sections": {}}
    all_rows: list[dict[str, Any]] = []
    for name in names:
        if log is not None:
            log(f"bench {name} ...")
        t0 = time.perf_counter()
        rows, info = SECTIONS[name](**(QUICK[name] if quick else {}))
        row_dicts = [r.to_dict() for r in rows]
        result["sections"][name] = {
            **info,
            "rows": row_dicts,
            "wall_s": time.perf_counter() - t0,
        }
        all_rows.extend(row_dicts)
    result["rows"] = all_rows
    return result


def _fmt_time(seconds: float) -> str:
    for scale, unit in ((1.0, "s"), (1e-3, "ms"), (1e-6, "µs")):
        if abs(seconds) >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def format_table(result: Mapping[str, Any]) -> str:
    """The rows as a fixed-width table, with the machine on the first line."""
    mach = result["machine"]
    head = (
        f"gdjax bench on {mach['backend']} ({mach['device']} x{mach['device_count']}, "
        f"{mach['cpu_count']} CPUs), jax {mach['jax']}, load average {mach['loadavg_1min']:.2f}"
    )
    if result["quick"]:
        head += "  [--quick: sizes too small to mean anything]"
    cols = ("comparison", "candidate", "baseline", "ratio", "goal", "met")
    lines = []
    for r in result["rows"]:
        met = "" if r["met"] is None else "yes" if r["met"] else "NO"
        lines.append(
            (
                r["name"],
                f"{_fmt_time(r['t_candidate'])}/{r['unit']}",
                f"{_fmt_time(r['t_baseline'])}/{r['unit']}",
                f"{r['ratio']:.3g}",
                r["goal"],
                met,
            )
        )
    widths = [
        max(len(c), *(len(line[i]) for line in lines)) if lines else len(c)
        for i, c in enumerate(cols)
    ]
    fmt = "  ".join(f"{{:{'<' if i < 1 else '>'}{w}}}" for i, w in enumerate(widths))
    out = [head, fmt.format(*cols), fmt.format(*("-" * w for w in widths))]
    out += [fmt.format(*line) for line in lines]
    for name, sec in result["sections"].items():
        if sec.get("skipped"):
            out.append(f"{name}: skipped {sec['skipped']}")
        notes = [f"  {r['name']}: {r['note']}" for r in sec["rows"] if r["note"]]
        out += notes
    return "\n".join(out)


def _one_cpu_device_per_core() -> None:
    """Give the CPU backend one device per core, if JAX has not started yet.

    Then the ``pass`` section can also time the one-pass step with the rows of ``X``
    split over every core (:func:`gdjax.blocked.sharded_linear_value_and_grad`); the
    other sections run on the first device, as before.
    """
    try:
        jax.config.update("jax_num_cpu_devices", os.cpu_count() or 1)
    except RuntimeError:  # backends already initialised: keep what there is
        pass


def cli_bench(args: Any) -> int:
    """``gdjax bench [--quick] [--only LIST] [--json FILE]``: print the table, write JSON."""
    only = _parse_only(args.only)
    _one_cpu_device_per_core()
    result = run(only, quick=args.quick, log=lambda s: print(s, file=sys.stderr, flush=True))
    print(format_table(result))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2)
            fh.write("\n")
    return 0
