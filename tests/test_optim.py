"""gdjax.optim: update rules against optax, against a NumPy reference, and on test functions.

Trajectories run as one ``lax.scan`` per optimizer. optax itself needs standard dtype
promotion (``0.9 ** count`` mixes a float with an int32), so its runs leave the suite's
strict promotion; gdjax's runs keep it.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gdjax as gd
from tests.helpers import assert_tree_allclose

O = gd.optim
STEPS = 1000


# ---------------------------------------------------------------------------------------
# A problem: noisy least squares, one mini-batch of 8 examples per step.

W_TRUE, B_TRUE = np.array([1.5, -2.0, 0.7]), 0.8


def _data(dtype, steps=STEPS, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(steps, 8, 3))
    y = x @ W_TRUE + B_TRUE + 0.1 * rng.normal(size=(steps, 8))
    return jnp.asarray(x, dtype), jnp.asarray(y, dtype)


def _params(dtype):
    # Same signs as the optimum, so no coordinate passes through zero on the way.
    return {"w": jnp.asarray([0.5, -0.5, 0.2], dtype), "b": jnp.asarray(0.2, dtype)}


def _loss(params, batch):
    x, y = batch
    return 0.5 * jnp.mean((x @ params["w"] + params["b"] - y) ** 2)


def _run(opt, params, data):
    """Parameters after each of the steps: a pytree of (steps, ...) arrays."""

    def step(carry, batch):
        p, state = carry
        updates, state = opt.update(jax.grad(_loss)(p, batch), state, p)
        p = optax.apply_updates(p, updates)
        return (p, state), p

    return jax.lax.scan(step, (params, opt.init(params)), data)[1]


_trajectory = jax.jit(_run, static_argnums=0)


@functools.partial(jax.jit, static_argnums=0)
def _trajectories(opts, params, data):
    """Several runs in one compiled program (one compilation costs more than the runs)."""
    return [_run(opt, params, data) for opt in opts]


# ---------------------------------------------------------------------------------------
# Step-by-step equality with optax.


class Both(NamedTuple):
    """An argument that each library gets its own version of (e.g. a schedule)."""

    ours: Any
    theirs: Any


def _kwargs(kwargs, side):
    return {k: getattr(v, side) if isinstance(v, Both) else v for k, v in kwargs.items()}


CASES = [
    ("sgd", dict(learning_rate=0.05)),
    ("sgd", dict(learning_rate=0.02, momentum=0.9)),
    ("sgd", dict(learning_rate=0.02, momentum=0.5, nesterov=True)),
    ("rmsprop", dict(learning_rate=0.01)),
    ("rmsprop", dict(learning_rate=0.003, decay=0.99, eps=1e-6, eps_in_sqrt=False)),
    ("rmsprop", dict(learning_rate=0.003, centered=True, bias_correction=True, initial_scale=0.1)),
    ("rmsprop", dict(learning_rate=0.002, momentum=0.8, nesterov=True, eps_in_sqrt=False)),
    ("adam", dict(learning_rate=0.01)),
    ("adam", dict(learning_rate=0.03, b1=0.5, b2=0.9, eps=1e-4, eps_root=1e-8)),
    ("adam", dict(learning_rate=0.01, nesterov=True)),
    ("adamw", dict(learning_rate=0.01)),
    ("adamw", dict(learning_rate=0.01, weight_decay=0.05, mask={"w": True, "b": False})),
    ("adagrad", dict(learning_rate=0.1)),
    ("adagrad", dict(learning_rate=0.3, initial_accumulator_value=0.0, eps=1e-5)),
    # Schedules: ours in our rules, optax's in optax's.
    (
        "sgd",
        dict(
            learning_rate=Both(
                O.exponential_decay(0.05, 100, 0.7), optax.exponential_decay(0.05, 100, 0.7)
            ),
            momentum=0.9,
        ),
    ),
    (
        "adam",
        dict(
            learning_rate=Both(
                O.cosine_decay(0.02, 800, alpha=0.1),
                optax.cosine_decay_schedule(0.02, 800, alpha=0.1),
            )
        ),
    ),
    (
        "adamw",
        dict(
            learning_rate=0.01,
            weight_decay=Both(
                O.exponential_decay(1e-2, 100, 0.5), optax.exponential_decay(1e-2, 100, 0.5)
            ),
        ),
    ),
    (
        "rmsprop",
        dict(
            learning_rate=Both(
                O.linear_warmup(1e-2, 100, 1e-3), optax.linear_schedule(1e-3, 1e-2, 100)
            )
        ),
    ),
    # Low-precision accumulators.
    ("adam", dict(learning_rate=0.01, mu_dtype=jnp.bfloat16)),
    ("sgd", dict(learning_rate=0.02, momentum=0.9, accumulator_dtype=jnp.bfloat16)),
]


def _ids(case):
    name, kwargs = case

    def show(v):
        return "schedule" if isinstance(v, Both) else "bf16" if v is jnp.bfloat16 else v

    return name + "-" + ",".join(f"{k}={show(v)}" for k, v in kwargs.items() if k != "mask")


def _optax_comparison(dtype, cases):
    """The cases, ours and optax's, each set compiled as one program."""
    data, params = _data(dtype), _params(dtype)
    ours = tuple(getattr(O, n)(**_kwargs(kw, "ours")) for n, kw in cases)
    theirs = tuple(getattr(optax, n)(**_kwargs(kw, "theirs")) for n, kw in cases)
    ours = _trajectories(ours, params, data)
    with jax.numpy_dtype_promotion("standard"):
        theirs = _trajectories(theirs, params, data)
    return params, ours, theirs


@pytest.fixture(scope="module")
def optax_runs_f32():
    return _optax_comparison(jnp.float32, CASES)


# Float64: every rule, with non-default options.
F64_CASES = [CASES[i] for i in (2, 5, 6, 8, 9, 11, 13)]


@pytest.fixture(scope="module")
def optax_runs_f64():
    with jax.enable_x64(True):
        return _optax_comparison(jnp.float64, F64_CASES)


@pytest.mark.parametrize("i", range(len(CASES)), ids=[_ids(c) for c in CASES])
def test_matches_optax_float32_every_step(i, optax_runs_f32):
    params, ours, theirs = optax_runs_f32
    assert ours[i]["w"].shape == (STEPS, 3) and ours[i]["w"].dtype == jnp.float32
    # Where XLA turns x / c into x * (1/c) in one program and not in the other, a step
    # differs by an ulp; over the 1,000 steps the difference stays at that level.
    assert_tree_allclose(ours[i], theirs[i], rtol=1e-6)
    # ...and the run went somewhere: near the optimum, far from the start.
    assert np.linalg.norm(ours[i]["w"][-1] - W_TRUE) < 0.1 * np.linalg.norm(params["w"] - W_TRUE)


@pytest.mark.parametrize("i", range(len(F64_CASES)), ids=[_ids(c) for c in F64_CASES])
def test_matches_optax_float64_every_step(i, optax_runs_f64):
    _, ours, theirs = optax_runs_f64
    assert ours[i]["w"].dtype == jnp.float64
    assert_tree_allclose(ours[i], theirs[i], rtol=1e-12)


def test_gd_is_plain_gradient_descent():
    data, params = _data(jnp.float32, steps=50), _params(jnp.float32)
    ours = _trajectory(O.gd(0.05), params, data)
    w, b = np.asarray(params["w"]), np.asarray(params["b"])
    x, y = np.asarray(data[0]), np.asarray(data[1])
    for t in range(50):
        r = x[t] @ w + b - y[t]
        w, b = w - np.float32(0.05) * (x[t].T @ r / 8), b - np.float32(0.05) * r.mean()
    np.testing.assert_allclose(ours["w"][-1], w, rtol=1e-5)
    np.testing.assert_allclose(ours["b"][-1], b, rtol=1e-5)


def test_low_precision_accumulators_are_stored_low():
    params = _params(jnp.float32)
    assert O.adam(0.01, mu_dtype=jnp.bfloat16).init(params)[0].mu["w"].dtype == jnp.bfloat16
    state = O.sgd(0.01, 0.9, accumulator_dtype=jnp.bfloat16).init(params)
    assert state[0].trace["w"].dtype == jnp.bfloat16


def test_drops_into_optax_chain_and_inject_hyperparams():
    data, params = _data(jnp.float32, steps=200), _params(jnp.float32)
    assert isinstance(O.adam(0.01), optax.GradientTransformation)
    clip = optax.clip_by_global_norm(0.5)
    # inject_hyperparams rebuilds the rule at each step from float32 arrays in its state.
    ours = (
        optax.chain(clip, O.adam(0.01)),
        optax.inject_hyperparams(O.adam)(learning_rate=0.01, b1=0.8),
    )
    theirs = (
        optax.chain(clip, optax.adam(0.01)),
        optax.inject_hyperparams(optax.adam)(learning_rate=0.01, b1=0.8),
    )
    with jax.numpy_dtype_promotion("standard"):
        ours, theirs = _trajectories(ours, params, data), _trajectories(theirs, params, data)
    assert_tree_allclose(ours, theirs, rtol=1e-6)


# ---------------------------------------------------------------------------------------
# An independent NumPy reference, written from the equations in docs/optimizers.md.


def _numpy_run(rule, hp, w0, x, y, steps):
    """Float64 NumPy run on the flat parameter vector θ = (w, b)."""
    theta = np.concatenate([np.asarray(w0["w"]), [float(w0["b"])]]).astype(np.float64)
    xs = np.concatenate([x, np.ones((*x.shape[:2], 1))], axis=2)
    a = hp["learning_rate"]
    v, m, s = np.zeros_like(theta), np.zeros_like(theta), np.zeros_like(theta)
    s = s + hp.get("initial_scale", hp.get("initial_accumulator_value", 0.0))
    out = []
    for t in range(1, steps + 1):
        g = xs[t - 1].T @ (xs[t - 1] @ theta - y[t - 1]) / xs.shape[1]
        if rule == "sgd":
            beta = hp["momentum"]
            if hp.get("momentum_style") == "ema":
                v = beta * v + (1 - beta) * g
                d = beta * v + (1 - beta) * g if hp.get("nesterov") else v
            else:
                v = beta * v + g
                d = beta * v + g if hp.get("nesterov") else v
            theta = theta - a * d
        elif rule == "rmsprop":
            rho, eps = hp["decay"], hp["eps"]
            s = rho * s + (1 - rho) * g**2
            m = rho * m + (1 - rho) * g
            var = s - m**2 if hp.get("centered") else s
            d = (
                g / (np.sqrt(var) + eps)
                if not hp.get("eps_in_sqrt", True)
                else g / np.sqrt(var + eps)
            )
            v = hp.get("momentum", 0.0) * v + a * d
            theta = theta - v
        elif rule in ("adam", "adamw"):
            b1, b2, eps, lam = hp["b1"], hp["b2"], hp["eps"], hp.get("weight_decay", 0.0)
            style = hp.get("weight_decay_style", "decoupled")
            if style == "l2":
                g = g + lam * theta
            m = b1 * m + (1 - b1) * g
            s = b2 * s + (1 - b2) * g**2
            if hp.get("bias_correction", True):
                m_hat, s_hat = m / (1 - b1**t), s / (1 - b2**t)
            else:
                m_hat, s_hat = m, s
            u = m_hat / (np.sqrt(s_hat) + eps)
            if style == "decoupled":
                theta = theta - a * (u + lam * theta)
            elif style == "independent":
                theta = theta - a * u - lam * theta
            else:
                theta = theta - a * u
        elif rule == "adagrad":
            s = s + g**2
            eps = hp["eps"]
            d = g / np.sqrt(s + eps) if hp.get("eps_in_sqrt", True) else g / (np.sqrt(s) + eps)
            theta = theta - a * d
        out.append(theta.copy())
    return np.stack(out)


NUMPY_CASES = [
    ("sgd", dict(learning_rate=0.02, momentum=0.9)),
    ("sgd", dict(learning_rate=0.05, momentum=0.9, momentum_style="ema")),
    ("sgd", dict(learning_rate=0.05, momentum=0.8, nesterov=True, momentum_style="ema")),
    ("rmsprop", dict(learning_rate=0.003, decay=0.9, eps=1e-8, eps_in_sqrt=False)),
    ("rmsprop", dict(learning_rate=0.003, decay=0.95, eps=1e-6, centered=True, momentum=0.5)),
    ("adam", dict(learning_rate=0.01, b1=0.9, b2=0.999, eps=1e-8)),
    ("adam", dict(learning_rate=0.01, b1=0.9, b2=0.999, eps=1e-8, bias_correction=False)),
    ("adamw", dict(learning_rate=0.01, b1=0.9, b2=0.99, eps=1e-8, weight_decay=0.1)),
    (
        "adamw",
        dict(learning_rate=0.01, b1=0.9, b2=0.99, eps=1e-8, weight_decay=1e-3,
             weight_decay_style="independent"),
    ),
    (
        "adamw",
        dict(learning_rate=0.01, b1=0.9, b2=0.99, eps=1e-8, weight_decay=0.1,
             weight_decay_style="l2"),
    ),
    ("adagrad", dict(learning_rate=0.3, initial_accumulator_value=0.1, eps=1e-7)),
    ("adagrad", dict(learning_rate=0.3, initial_accumulator_value=0.0, eps=1e-10,
                     eps_in_sqrt=False)),
]  # fmt: skip


@pytest.fixture(scope="module")
def numpy_runs():
    steps = 300
    with jax.enable_x64(True):
        data, params = _data(jnp.float64, steps=steps), _params(jnp.float64)
        ours = _trajectories(tuple(getattr(O, n)(**kw) for n, kw in NUMPY_CASES), params, data)
    x, y = np.asarray(data[0]), np.asarray(data[1])
    refs = [_numpy_run(n, kw, params, x, y, steps) for n, kw in NUMPY_CASES]
    return [np.concatenate([o["w"], o["b"][:, None]], axis=1) for o in ours], refs


@pytest.mark.parametrize("i", range(len(NUMPY_CASES)), ids=[_ids(c) for c in NUMPY_CASES])
def test_matches_numpy_reference(i, numpy_runs):
    ours, refs = numpy_runs
    assert ours[i].dtype == np.float64
    np.testing.assert_allclose(ours[i], refs[i], rtol=1e-10)


def test_course_notes_momentum_is_trace_momentum_with_scaled_rate(x64):
    """v ← βv + (1−β)g is (1−β)·(v ← βv + g), so α and α(1−β) give the same steps."""
    data, params = _data(jnp.float64, steps=300), _params(jnp.float64)
    beta = 0.9
    ema, trace = _trajectories(
        (O.sgd(0.1, beta, momentum_style="ema"), O.sgd(0.1 * (1 - beta), beta)), params, data
    )
    assert_tree_allclose(ema, trace, rtol=1e-12)


# ---------------------------------------------------------------------------------------
# Convergence.


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _minimize(f, opts, steps, p0):
    """Final parameters of each optimizer in ``opts`` after ``steps[i]`` full-batch steps."""

    def run(opt, steps):
        def step(carry, _):
            p, state = carry
            updates, state = opt.update(jax.grad(f)(p), state, p)
            return (optax.apply_updates(p, updates), state), None

        return jax.lax.scan(step, (p0, opt.init(p0)), None, length=steps)[0][0]

    return [run(opt, n) for opt, n in zip(opts, steps)]


def _rosenbrock(p):
    return (1 - p["x"]) ** 2 + 100 * (p["y"] - p["x"] ** 2) ** 2


ROSENBROCK = [
    ("gd", O.gd(1e-3), 20_000),
    ("sgd-momentum", O.sgd(1e-3, 0.9), 5_000),
    ("sgd-nesterov", O.sgd(1e-3, 0.9, nesterov=True), 5_000),
    ("sgd-ema", O.sgd(1e-2, 0.9, momentum_style="ema"), 5_000),
    ("rmsprop", O.rmsprop(O.cosine_decay(1e-2, 10_000), eps_in_sqrt=False), 10_000),
    ("adam", O.adam(O.cosine_decay(2e-2, 10_000)), 10_000),
    ("adamw", O.adamw(O.cosine_decay(2e-2, 10_000), weight_decay=0.0), 10_000),
    ("adagrad", O.adagrad(1.0), 10_000),
]


@pytest.fixture(scope="module")
def rosenbrock_minima():
    p0 = {"x": jnp.float32(-1.2), "y": jnp.float32(1.0)}  # the classic start
    _, opts, steps = zip(*ROSENBROCK)
    return _minimize(_rosenbrock, opts, steps, p0)


@pytest.mark.parametrize("i", range(len(ROSENBROCK)), ids=[c[0] for c in ROSENBROCK])
def test_converges_on_rosenbrock(i, rosenbrock_minima):
    p = rosenbrock_minima[i]
    np.testing.assert_allclose([p["x"], p["y"]], [1.0, 1.0], atol=1e-3)  # minimum at (1, 1)


W_STAR = (3.0, -1.0)


def _quadratic(w):
    """f(w) = ½ (w − w*)ᵀ diag(1, 10) (w − w*): condition number 10, minimum at w*."""
    d = w - jnp.asarray(W_STAR)
    return 0.5 * (d[0] ** 2 + 10 * d[1] ** 2)


QUADRATIC = [
    ("gd", O.gd(0.15)),
    ("sgd", O.sgd(0.05, 0.9, nesterov=True)),
    ("rmsprop", O.rmsprop(O.exponential_decay(0.05, 100, 0.5))),
    ("adam", O.adam(O.piecewise_constant(0.1, {300: 0.1, 600: 0.1}))),
    ("adamw", O.adamw(O.linear_warmup(0.1, 50, then=O.cosine_decay(0.1, 950)), weight_decay=0)),
    ("adagrad", O.adagrad(0.5)),
]


@pytest.fixture(scope="module")
def quadratic_minima():
    opts = tuple(c[1] for c in QUADRATIC)
    return _minimize(_quadratic, opts, (1000,) * len(opts), jnp.zeros(2))


@pytest.mark.parametrize("i", range(len(QUADRATIC)), ids=[c[0] for c in QUADRATIC])
def test_converges_on_ill_conditioned_quadratic(i, quadratic_minima):
    np.testing.assert_allclose(quadratic_minima[i], W_STAR, atol=1e-4)


# ---------------------------------------------------------------------------------------
# Traced hyperparameters: vmap sweeps, one compilation.


def test_vmap_over_learning_rate_equals_loop_and_compiles_once():
    data, params = _data(jnp.float32, steps=100), _params(jnp.float32)
    traces = 0

    def run(lr, params, data):
        nonlocal traces
        traces += 1
        opt = O.adam(lr)

        def step(carry, batch):
            p, state = carry
            updates, state = opt.update(jax.grad(_loss)(p, batch), state, p)
            return (optax.apply_updates(p, updates), state), _loss(p, batch)

        return jax.lax.scan(step, (params, opt.init(params)), data)

    lrs = jnp.asarray([1e-3, 3e-3, 1e-2, 3e-2, 1e-1], jnp.float32)
    (p_swept, _), losses = jax.jit(jax.vmap(run, in_axes=(0, None, None)))(lrs, params, data)
    assert traces == 1
    looped = jax.jit(run)
    for i, lr in enumerate(lrs):
        (p_i, _), losses_i = looped(lr, params, data)
        # A loss is a small difference of O(1) terms: compare it on the scale of the data.
        np.testing.assert_allclose(losses[i], losses_i, rtol=1e-6, atol=1e-7)
        assert_tree_allclose(jax.tree.map(lambda a, i=i: a[i], p_swept), p_i, rtol=1e-6)
    assert traces == 2 and looped._cache_size() == 1  # one trace for all five rates
    # Different rates really gave different runs.
    assert len(set(np.round(np.asarray(losses[:, -1]), 6).tolist())) == len(lrs)


SWEEPS = [
    (lambda learning_rate, b1, b2: O.adam(learning_rate, b1=b1, b2=b2), ("b1", "b2")),
    (lambda learning_rate, decay: O.rmsprop(learning_rate, decay, centered=True), ("decay",)),
]
SWEEP_VALUES = {
    "learning_rate": [0.01, 0.003],
    "b1": [0.5, 0.95],
    "b2": [0.9, 0.99],
    "decay": [0.5, 0.99],
}


def _sweep(factory):
    return jax.jit(jax.vmap(lambda hp, p, d: _run(factory(**hp), p, d), (0, None, None)))


def test_vmap_over_betas_equals_a_loop():
    """Sweep β's (and eps) with vmap; each row equals the rule built from that setting."""
    data, params = _data(jnp.float32, steps=100), _params(jnp.float32)
    # The same float32 numbers as the sweep: a traced β is float32, and 1 − β in float32
    # differs from 1 − β in double (Python floats) by up to ~1e-6 relative for β = 0.99.
    f32 = np.float32
    singles = []
    for factory, names in SWEEPS:
        for i in range(2):
            setting = {k: f32(SWEEP_VALUES[k][i]) for k in ("learning_rate", *names)}
            singles.append(factory(**setting))
    expected = _trajectories(tuple(singles), params, data)
    for j, (factory, names) in enumerate(SWEEPS):
        hps = {k: jnp.asarray(SWEEP_VALUES[k], jnp.float32) for k in ("learning_rate", *names)}
        swept = _sweep(factory)(hps, params, data)
        for i in range(2):
            row = jax.tree.map(lambda a, i=i: a[i], swept)
            assert_tree_allclose(row, expected[2 * j + i], rtol=2e-6, err_msg=f"{names} #{i}")


TRACEABLE = {
    "sgd": (lambda h: O.sgd(h["lr"], h["beta"], True, momentum_style="ema")),
    "rmsprop": (
        lambda h: O.rmsprop(
            h["lr"], h["beta"], h["eps"], h["init"], centered=True, momentum=h["beta"]
        )
    ),
    "adam": (lambda h: O.adam(h["lr"], h["beta"], h["beta2"], h["eps"], h["eps"])),
    "adamw": (lambda h: O.adamw(h["lr"], h["beta"], h["beta2"], h["eps"], weight_decay=h["wd"])),
    "adagrad": (lambda h: O.adagrad(h["lr"], h["init"], h["eps"])),
    "schedule": (lambda h: O.sgd(O.linear_warmup(h["lr"], 3, h["wd"]), h["beta"])),
}


@pytest.mark.parametrize("name", TRACEABLE)
def test_every_hyperparameter_may_be_traced(name):
    """Built inside jit from traced scalars, each rule does what it does with constants."""
    hp = {"lr": 0.1, "beta": 0.8, "beta2": 0.95, "eps": 1e-3, "init": 0.2, "wd": 0.01}
    hp = {k: np.float32(v) for k, v in hp.items()}
    params = _params(jnp.float32)
    grads = [jax.tree.map(lambda p, k=k: jnp.sin(p + k), params) for k in range(3)]

    def three_steps(hp, params, grads):
        opt = TRACEABLE[name](hp)
        state = opt.init(params)
        for g in grads:
            updates, state = opt.update(g, state, params)
            params = optax.apply_updates(params, updates)
        return params

    traced = jax.jit(three_steps)(hp, params, grads)
    assert_tree_allclose(traced, three_steps(hp, params, grads), rtol=1e-6)
    assert not np.allclose(traced["w"], params["w"])


def test_no_recompilation_on_second_update():
    params = _params(jnp.float32)
    grads = jax.tree.map(jnp.ones_like, params)
    for opt in [
        O.gd(0.1),
        O.sgd(O.exponential_decay(0.1, 10, 0.5), 0.9, nesterov=True),
        O.rmsprop(0.1, centered=True, momentum=0.9, bias_correction=True),
        O.adam(O.linear_warmup(0.1, 5)),
        O.adamw(0.1, weight_decay=O.constant(1e-3)),
        O.adagrad(0.1),
    ]:
        traces = 0

        @jax.jit
        def update(grads, state, params, opt=opt):
            nonlocal traces
            traces += 1
            return opt.update(grads, state, params)

        state = opt.init(params)
        updates, state = update(grads, state, params)
        updates, state = update(jax.tree.map(lambda g: -2 * g, grads), state, params)
        updates, state = update(grads, state, params)
        assert traces == 1 and update._cache_size() == 1
        assert all(np.isfinite(u).all() for u in jax.tree.leaves(updates))


def test_traced_float32_rate_keeps_float64_state(x64):
    params = _params(jnp.float64)
    grads = jax.tree.map(jnp.ones_like, params)

    @jax.jit
    def step(lr, b1):
        opt = O.adamw(lr, b1=b1, weight_decay=lr)
        return opt.update(grads, opt.init(params), params)

    updates, state = step(jnp.float32(0.1), jnp.float32(0.9))
    assert all(leaf.dtype == jnp.float64 for leaf in jax.tree.leaves((updates, state[0].mu)))


# ---------------------------------------------------------------------------------------
# Schedules against optax's.

SCHEDULES = [
    (O.constant(0.3), optax.constant_schedule(0.3)),
    (O.exponential_decay(0.1, 100, 0.5), optax.exponential_decay(0.1, 100, 0.5)),
    (
        O.exponential_decay(0.1, 100, 0.5, transition_begin=50, staircase=True, end_value=0.01),
        optax.exponential_decay(
            0.1, 100, 0.5, transition_begin=50, staircase=True, end_value=0.01
        ),
    ),
    (
        O.exponential_decay(0.1, 10, 1.5, end_value=2.0),
        optax.exponential_decay(0.1, 10, 1.5, end_value=2.0),
    ),
    (
        O.piecewise_constant(0.1, {300: 0.5, 100: 0.1}),
        optax.piecewise_constant_schedule(0.1, {300: 0.5, 100: 0.1}),
    ),
    (O.cosine_decay(0.1, 800), optax.cosine_decay_schedule(0.1, 800)),
    (O.cosine_decay(0.1, 500, 0.2, 2.0), optax.cosine_decay_schedule(0.1, 500, 0.2, 2.0)),
    (O.linear_warmup(0.1, 100, 0.01), optax.linear_schedule(0.01, 0.1, 100)),
    (
        O.linear_warmup(0.1, 100, then=O.cosine_decay(0.1, 900, alpha=0.05)),
        optax.warmup_cosine_decay_schedule(0.0, 0.1, 100, 1000, end_value=0.005),
    ),
]  # fmt: skip


@pytest.mark.parametrize("ours,theirs", SCHEDULES, ids=lambda s: "")
def test_schedules_match_optax(ours, theirs):
    counts = jnp.arange(1200, dtype=jnp.int32)
    with jax.numpy_dtype_promotion("standard"):
        expected = np.asarray(jax.jit(jax.vmap(theirs))(counts))
    # 1 + cos(πt/T) cancels near t = T: there the values agree to 1e-8 of the peak rate.
    np.testing.assert_allclose(jax.jit(jax.vmap(ours))(counts), expected, rtol=2e-6, atol=1e-8)
    assert float(ours(0)) == pytest.approx(float(expected[0]), rel=1e-6)  # a Python int works


def test_schedule_closed_forms():
    assert float(O.exponential_decay(1.0, 10, 0.5)(30)) == pytest.approx(0.125)
    assert float(O.cosine_decay(2.0, 100)(50)) == pytest.approx(1.0)
    assert float(O.cosine_decay(2.0, 100)(400)) == pytest.approx(0.0, abs=1e-7)
    assert float(O.piecewise_constant(1.0, {10: 0.1, 20: 0.1})(25)) == pytest.approx(0.01)
    assert float(O.linear_warmup(1.0, 4)(1)) == pytest.approx(0.25)


def test_schedule_values_may_be_traced():
    values = jnp.asarray([0.1, 0.2, 0.4], jnp.float32)
    swept = jax.vmap(lambda v: O.exponential_decay(v, 10, 0.5)(20))(values)
    np.testing.assert_allclose(swept, values * 0.25, rtol=1e-6)
    swept = jax.vmap(lambda v: O.linear_warmup(v, 10, then=O.cosine_decay(v, 10))(15))(values)
    np.testing.assert_allclose(swept, values * 0.5, rtol=1e-6)


# ---------------------------------------------------------------------------------------
# Errors.

RULES = O.RULES


def test_rules_by_name():
    names = {*"gd sgd rmsprop adam adamw nadam nadamw adagrad".split()}
    assert O.get("adam") is O.adam and set(RULES) == names
    with pytest.raises(ValueError, match="'lion' is not an update rule; choose one of gd, sgd"):
        O.get("lion")


@pytest.mark.parametrize("name", RULES)
@pytest.mark.parametrize("lr", [0.0, -0.1, math.nan, math.inf])
def test_learning_rate_must_be_positive(name, lr):
    with pytest.raises(ValueError, match="learning_rate"):
        RULES[name](lr)


@pytest.mark.parametrize("name", RULES)
def test_learning_rate_must_be_a_scalar_number(name):
    with pytest.raises(TypeError, match="learning_rate"):
        RULES[name]("0.1")
    with pytest.raises(ValueError, match=r"learning_rate.*scalar.*gd\.sweep"):
        RULES[name](jnp.ones((2, 2)))
    # a 1-D array is K settings of a sweep
    assert O.num_settings(RULES[name](jnp.asarray([0.1, 0.2]))) == 2


@pytest.mark.parametrize(
    "make,arg",
    [
        (lambda v: O.sgd(0.1, momentum=v), "momentum"),
        (lambda v: O.rmsprop(0.1, decay=v), "decay"),
        (lambda v: O.rmsprop(0.1, momentum=v), "momentum"),
        (lambda v: O.adam(0.1, b1=v), "b1"),
        (lambda v: O.adamw(0.1, b2=v), "b2"),
    ],
)
@pytest.mark.parametrize("value", [1.0, 1.5, -0.1])
def test_betas_must_lie_in_unit_interval(make, arg, value):
    with pytest.raises(ValueError, match=rf"`{arg}` must lie in \[0.0, 1.0\)"):
        make(value)


EPS_RULES = [
    lambda e: O.rmsprop(0.1, eps=e),
    lambda e: O.adam(0.1, eps=e),
    lambda e: O.adagrad(0.1, eps=e),
]


@pytest.mark.parametrize("make", EPS_RULES, ids=["rmsprop", "adam", "adagrad"])
@pytest.mark.parametrize("eps", [0.0, -1e-8])
def test_eps_must_be_positive(make, eps):
    with pytest.raises(ValueError, match="`eps` must be a positive"):
        make(eps)


def test_other_bad_options():
    with pytest.raises(ValueError, match="weight_decay"):
        O.adamw(0.1, weight_decay=-1e-4)
    with pytest.raises(ValueError, match="momentum_style"):
        O.sgd(0.1, 0.9, momentum_style="damped")
    with pytest.raises(ValueError, match="weight_decay_style"):
        O.adamw(0.1, weight_decay_style="coupled")
    with pytest.raises(TypeError, match="nesterov"):
        O.sgd(0.1, 0.9, nesterov="yes")
    with pytest.raises(ValueError, match="transition_steps"):
        O.exponential_decay(0.1, 0, 0.5)
    with pytest.raises(TypeError, match="decay_steps"):
        O.cosine_decay(0.1, 10.5)
    with pytest.raises(TypeError, match="then"):
        O.linear_warmup(0.1, 10, then=0.1)
    params = _params(jnp.float32)
    opt = O.adamw(0.1, mask={"w": True})
    with pytest.raises(ValueError, match="`mask` is not shaped like the params"):
        opt.init(params)  # refused at init, before any update is traced
    opt = O.adamw(0.1)
    with pytest.raises(ValueError, match="`params` is None"):
        opt.update(params, opt.init(params))


@pytest.mark.parametrize("name", RULES)
def test_grads_must_match_the_state(name):
    opt = RULES[name](0.1)
    params = _params(jnp.float32)
    state = opt.init(params)
    extra = {**params, "c": jnp.zeros(2)}
    with pytest.raises(ValueError, match="`grads` does not have the same structure"):
        opt.update(extra, state, params)
    wrong_shape = {"w": jnp.zeros(4), "b": params["b"]}
    with pytest.raises(ValueError, match=r"`grads\['w'\]` has shape \(4,\)"):
        opt.update(wrong_shape, state, params)
    # Raised while tracing: under jit the check costs nothing at run time.
    with pytest.raises(ValueError, match="`grads`"):
        jax.jit(opt.update)(extra, state, params)


@pytest.mark.parametrize("name", RULES)
def test_update_before_init(name):
    opt = RULES[name](0.1)
    params = _params(jnp.float32)
    with pytest.raises(TypeError, match=r"before init.*opt.init\(params\)"):
        opt.update(params, None, params)
    with pytest.raises(TypeError, match="`state`"):
        jax.jit(opt.update)(params, None, params)
    other = O.adagrad(0.1) if name != "adagrad" else O.adam(0.1)
    with pytest.raises(TypeError, match="`state`"):
        opt.update(params, other.init(params), params)
