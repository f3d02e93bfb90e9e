"""optax's own test cases, ported to gd.optim (the parity list of issue 12).

Each test names the optax test it ports (``optax/schedules/_schedule_test.py``,
``optax/schedules/_join_test.py``, ``optax/transforms/_masking_test.py``,
``optax/_src/alias_test.py`` of optax 0.2.8) and asserts optax's expected numbers, or, where
gdjax deliberately refuses what optax accepts, the refusal (docs/conventions.md says why).
Every schedule is also run next to optax's own schedule of the same arguments.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gdjax as gd
from gdjax import UsageError

O = gd.optim


def _standard():
    """optax itself mixes Python floats and int32 counts: run it without strict promotion."""
    return jax.numpy_dtype_promotion("standard")


def _values(schedule, n, jit=True):
    fn = jax.jit(schedule) if jit else schedule
    return np.array([float(fn(t)) for t in range(n)])


# ---------------------------------------------------------------------------------------
# optax/schedules/_schedule_test.py


def test_constant():  # ConstantTest.test_constant
    np.testing.assert_allclose(_values(O.constant(10.0), 15), [10.0] * 15, atol=1e-3)


def test_polynomial_linear():  # PolynomialTest.test_linear
    s = O.polynomial_schedule(init_value=10.0, end_value=20.0, power=1, transition_steps=10)
    np.testing.assert_allclose(_values(s, 15), list(range(10, 20)) + [20] * 5, atol=1e-3)


def test_polynomial_nonlinear():  # PolynomialTest.test_nonlinear
    s = O.polynomial_schedule(init_value=25.0, end_value=10.0, power=2, transition_steps=10)
    want = [10.0 + 15.0 * (1.0 - n / 10) ** 2 for n in range(10)] + [10] * 5
    np.testing.assert_allclose(_values(s, 15), want, atol=1e-3)


def test_polynomial_with_decay_begin():  # PolynomialTest.test_with_decay_begin
    s = O.polynomial_schedule(30.0, 10.0, 2, transition_steps=10, transition_begin=4)
    want = [30.0] * 4 + [10.0 + 20.0 * (1.0 - n / 10) ** 2 for n in range(10)] + [10] * 6
    np.testing.assert_allclose(_values(s, 20), want, atol=1e-3)


@pytest.mark.parametrize("steps", [-1, 0])
def test_zero_transition_steps_are_refused(steps):
    # PolynomialTest.test_zero_steps_schedule, ExponentialTest.test_nonvalid_transition_steps:
    # optax returns the constant init_value (with a warning); gdjax refuses.
    with pytest.raises(UsageError, match="`transition_steps` must be a whole number of steps"):
        O.polynomial_schedule(10.0, 20.0, 1, transition_steps=steps)
    with pytest.raises(UsageError, match="`transition_steps`"):
        O.exponential_decay(1.0, steps, 1.0)
    with pytest.raises(UsageError, match="`transition_steps`"):
        O.linear_schedule(1.0, 2.0, steps)


def test_negative_transition_begin_is_refused():  # optax: a warning, then 0
    with pytest.raises(UsageError, match=r"`transition_begin` must be .* >= 0, got -1"):
        O.exponential_decay(1.0, 2, 0.5, transition_begin=-1)
    with pytest.raises(UsageError, match="`transition_begin`"):
        O.linear_schedule(1.0, 2.0, 5, transition_begin=-3)


@pytest.mark.parametrize("init", [0.1, -0.1])
def test_piecewise_constant(init):  # PiecewiseConstantTest.test_positive / test_negative
    s = O.piecewise_constant(init, {3: 2.0, 6: 0.5})
    want = init * np.array([1, 1, 1, 2, 2, 2, 1, 1, 1, 1])
    np.testing.assert_allclose(_values(s, 10), want, atol=1e-3)


@pytest.mark.parametrize("staircase", [False, True])
def test_exponential_constant(staircase):  # ExponentialTest.test_constant_schedule
    s = O.exponential_decay(1.0, transition_steps=15, decay_rate=1.0, staircase=staircase)
    np.testing.assert_allclose(_values(s, 15), [1.0] * 15, atol=1e-3)


def test_exponential_decay_rate_zero_is_refused():  # ExponentialTest.test_nonvalid_decay_rate
    # optax: the constant init_value; the formula: 0 after the first transition. Ambiguous.
    with pytest.raises(UsageError, match="`decay_rate` is 0, which is ambiguous"):
        O.exponential_decay(1.0, transition_steps=2, decay_rate=0.0)


@pytest.mark.parametrize("staircase,begin", [(False, 0), (True, 0), (False, 5), (True, 5)])
def test_exponential(staircase, begin):  # ExponentialTest.test_exponential
    s = O.exponential_decay(1.0, 2, 2.0, transition_begin=begin, staircase=staircase)
    p = np.arange(15) / 2
    p = np.floor(p) if staircase else p
    want = np.concatenate([[1.0] * begin, 2.0**p])
    np.testing.assert_allclose(_values(s, 15 + begin), want, atol=1e-3)


@pytest.mark.parametrize(
    "rate,end,staircase",
    [(0.2, 0.1, False), (1.0, 0.1, False), (2.0, 3.0, False),
     (0.2, 0.1, True), (1.0, 0.1, True), (2.0, 3.0, True)],
)  # fmt: skip
def test_exponential_end_value(rate, end, staircase):  # test_end_value_with_staircase
    s = O.exponential_decay(1.0, 2, rate, transition_begin=3, staircase=staircase, end_value=end)
    p = np.arange(11) / 2
    p = np.floor(p) if staircase else p
    want = np.concatenate([[1.0] * 3, rate**p]).astype(np.float32)
    want = np.maximum(want, end) if rate < 1 else np.minimum(want, end)
    np.testing.assert_allclose(_values(s, 14), want, atol=1e-3)


def test_exponential_immutable_count():  # ExponentialTest.test_immutable_count
    s = O.exponential_decay(32.0, transition_steps=1, decay_rate=0.5)
    np.testing.assert_allclose(_values(s, 5), [32, 16, 8, 4, 2], atol=1e-3)


@pytest.mark.parametrize(
    "steps,alpha,n", [(10, 0.0, 10), (5, 0.0, 12), (5, 0.1, 12)]
)  # CosineDecayTest: smaller count, greater count, greater count with alpha
def test_cosine_decay(steps, alpha, n):
    s = O.cosine_decay(0.1, steps, alpha)
    c = 0.5 + 0.5 * np.cos(np.pi * np.minimum(np.arange(n), steps) / steps)
    np.testing.assert_allclose(_values(s, n), 0.1 * ((1 - alpha) * c + alpha), atol=1e-3)


def test_cosine_decay_with_exponent():  # CosineDecayTest.test_with_exponent
    s = jax.jit(O.cosine_decay(init_value=0.1, decay_steps=100, alpha=0.0, exponent=2))
    out = s(np.array([0, 10, 50, 75, 100]))
    want = [0.1, 0.09516553580760956, 0.025, 0.0021446612663567066, 0.0]
    np.testing.assert_allclose(out, want, rtol=1e-6, atol=1e-8)


def test_cosine_decay_with_giant_int_steps():  # CosineDecayTest.test_with_giant_int_steps
    s = jax.jit(O.cosine_decay(init_value=1000.0, decay_steps=int(1e10), alpha=0.0, exponent=1))
    np.testing.assert_allclose(s(int(1e9)), 975.52826, rtol=1e-6)


@pytest.mark.parametrize("init,peak,end", [(10, 0.5, 1e-4), (5, 3, 0.0)])
def test_warmup_cosine_limits(init, peak, end):  # WarmupCosineDecayTest.test_limits
    s = jax.jit(O.warmup_cosine_decay_schedule(init, peak, 100, 1000, end_value=end))
    np.testing.assert_allclose(s(0), init)
    np.testing.assert_allclose(s(100), peak)
    np.testing.assert_allclose(s(1000), end, rtol=1e-3)


def test_warmup_cosine_with_exponent_and_negative_end():  # .test_with_exponent
    s = jax.jit(O.warmup_cosine_decay_schedule(0.2, 1.21, 50, 100, end_value=-3.0, exponent=2))
    out = s(np.array([0, 10, 50, 75, 100]))
    want = [0.20000004768371582, 0.4020000100135803, 1.2100000381469727, -1.947500228881836,
            -3.000000238418579]  # fmt: skip
    np.testing.assert_allclose(out, want, rtol=1e-6, atol=1e-8)


def test_warmup_cosine_zero_peak():  # WarmupCosineDecayTest.test_zero_peak_value
    s = jax.jit(O.warmup_cosine_decay_schedule(0.2, 0, 50, 100, end_value=-3.0, exponent=2))
    out = s(np.array([0, 10, 50, 75, 100]))
    np.testing.assert_allclose(out, [0.2, 0.16, 0.0, 0.0, 0.0], rtol=1e-6, atol=1e-8)


def test_warmup_cosine_monotone_and_exponent_ordering():  # .test_monotonicity_and_...
    regular = O.warmup_cosine_decay_schedule(0.0, 1.0, 5, 25, end_value=0.1, exponent=1.0)
    steep = O.warmup_cosine_decay_schedule(0.0, 1.0, 5, 25, end_value=0.1, exponent=2.0)
    v, v2 = np.asarray(regular(np.arange(26))), np.asarray(steep(np.arange(26)))
    assert np.all(np.diff(v[:6]) > 0) and np.all(np.diff(v[5:]) <= 0)
    assert v[5] == pytest.approx(1.0, abs=1e-6) and v[-1] == pytest.approx(0.1, abs=1e-6)
    assert np.all(v2[5:] <= v[5:] + 1e-12)


def test_warmup_cosine_refuses_decay_equal_to_warmup():  # .test_raises_when_decay_equals_warmup
    with pytest.raises(ValueError, match=r"`decay_steps` .* must exceed `warmup_steps`"):
        O.warmup_cosine_decay_schedule(0.2, 1.2, warmup_steps=10, decay_steps=10)


# ---------------------------------------------------------------------------------------
# optax/schedules/_join_test.py


def test_join_schedules():  # JoinTest.test_join_schedules
    s = O.join_schedules([O.constant(1.0), O.constant(2.0), O.constant(1.0)], [3, 6])
    assert list(_values(s, 7)) == [1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 1.0]  # atol=0 in optax


def test_join_counts_each_piece_from_its_boundary():
    own = lambda t: 0.5 * jnp.ones((), jnp.float32) + jnp.asarray(t, jnp.float32)  # noqa: E731
    s = O.join_schedules([O.linear_schedule(0.0, 1.0, 4), own], [4])
    with _standard():
        theirs = optax.join_schedules([optax.linear_schedule(0.0, 1.0, 4), own], [4])
        want = [float(theirs(t)) for t in range(8)]
    np.testing.assert_allclose(_values(s, 8, jit=False), want, rtol=1e-6)
    with pytest.raises(UsageError, match="`boundaries` has 2 steps for 2 schedules"):
        O.join_schedules([O.constant(1.0), O.constant(2.0)], [3, 6])


# ---------------------------------------------------------------------------------------
# Every schedule next to optax's own, over steps that cross every breakpoint.

PAIRS = [
    (lambda m: m.exponential_decay(0.3, 7, 0.5, transition_begin=4, staircase=True), "exp"),
    (lambda m: m.polynomial_schedule(0.1, -0.2, 3.0, 20, 5), "polynomial"),
    (lambda m: m.linear_schedule(0.5, 0.05, transition_steps=7, transition_begin=3), "linear"),
    (lambda m: m.warmup_cosine_decay_schedule(0.0, 0.4, 6, 30, end_value=0.01), "warmup_cos"),
]


@pytest.mark.parametrize("make", [p[0] for p in PAIRS], ids=[p[1] for p in PAIRS])
def test_schedules_match_optax_step_by_step(make):
    with _standard():
        want = [float(make(optax)(t)) for t in range(40)]
    np.testing.assert_allclose(_values(make(O), 40, jit=False), want, rtol=2e-6, atol=1e-7)


# ---------------------------------------------------------------------------------------
# optax/transforms/_masking_test.py, for the mask of add_decayed_weights / adamw


def _tree(x):
    return jax.tree.map(jnp.asarray, x)


def test_prefix_mask():  # MaskedTest.test_prefix_mask (the masked transform: weight decay)
    mask = {"a": True, "b": False, "c": {"d": False, "e": True}}
    params = _tree({"a": 1.0, "b": {"f": 2.0}, "c": {"d": 3.0, "e": ([4.0, 5.0], 6.0)}})
    updates = jax.tree.map(lambda x: x / 10.0, params)
    opt = O.add_decayed_weights(0.1, mask)
    got, _ = jax.jit(opt.update)(updates, jax.jit(opt.init)(params), params)
    want = jax.tree.map(
        lambda m, u, p: jax.tree.map(lambda a, b: a + 0.1 * b if m else a, u, p),
        mask, updates, params,
    )  # fmt: skip
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-6)


def test_adamw_prefix_mask_matches_optax():  # issue 12: adamw(mask={"layer": False, ...})
    params = _tree({"layer": {"w": [0.5, -1.0], "b": [0.2]}, "head": {"w": [1.5, 2.0]}})
    grads = jax.tree.map(lambda x: 0.3 * x + 0.1, params)
    mask = {"layer": False, "head": True}
    ours = O.adamw(0.1, weight_decay=0.5, mask=mask)
    u, _ = ours.update(grads, ours.init(params), params)
    with _standard():
        theirs = optax.adamw(0.1, weight_decay=0.5, mask=mask)
        v, _ = theirs.update(grads, theirs.init(params), params)
    for a, b in zip(jax.tree.leaves(u), jax.tree.leaves(v), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    # and the decay really is masked: the layer's update is plain Adam's
    plain, _ = O.adam(0.1).update(grads, O.adam(0.1).init(params), params)
    np.testing.assert_allclose(u["layer"]["w"], plain["layer"]["w"], rtol=1e-6)
    assert not np.allclose(u["head"]["w"], plain["head"]["w"])


def test_mask_fn():  # MaskedTest.test_mask_fn
    params = {"a": jnp.ones((1, 2)), "b": (jnp.ones((1,)), jnp.ones((1, 2, 3)))}
    opt = O.add_decayed_weights(0.1, lambda p: jax.tree.map(lambda x: x.ndim > 1, p))
    grads = jax.tree.map(lambda x: x * 2, params)
    u, _ = jax.jit(opt.update)(grads, opt.init(params), params)
    np.testing.assert_allclose(u["a"], grads["a"] + 0.1 * params["a"])
    np.testing.assert_allclose(u["b"][0], grads["b"][0])
    np.testing.assert_allclose(u["b"][1], grads["b"][1] + 0.1 * params["b"][1])


@pytest.mark.parametrize("extra_in_mask", [False, True])
@pytest.mark.parametrize("use_fn", [False, True])
def test_tree_mismatch_fails(extra_in_mask, use_fn):  # MaskedTest.test_tree_mismatch_fails
    mask = {"a": True, "b": [False, True], "c": {"d": True, "e": (False, True)}}
    params = _tree({"a": 1.0, "b": [2.0, 3.0], "c": {"d": 4.0, "e": (5.0, 6.0)}})
    if extra_in_mask:
        mask["c"]["extra"] = True
    else:
        params["c"]["extra"] = jnp.asarray(7.0)
    opt = O.adamw(0.1, mask=(lambda _: mask) if use_fn else mask)
    with pytest.raises(UsageError, match="`mask` is not shaped like the params"):
        opt.init(params)


@pytest.mark.parametrize("bad", ["yes", {"w": 3.0}, {"w": None, "b": 1}])
def test_malformed_mask_is_refused_when_built(bad):
    with pytest.raises(UsageError, match=r"`mask`.*not True or False|`mask`.*not shaped"):
        opt = O.adamw(0.1, mask=bad)
        opt.init({"w": jnp.ones(2), "b": jnp.ones(())})


# ---------------------------------------------------------------------------------------
# optax/_src/alias_test.py: nadam / nadamw, complex parameters, extra args


def _run(opt, params, grads_fn, steps=8):
    state = opt.init(params)
    out = []
    for _ in range(steps):
        u, state = opt.update(grads_fn(params), state, params)
        params = optax.apply_updates(params, u)
        out.append(params)
    return out


def _parabola(dtype):  # alias_test._setup_parabola: the complex target is (1 + 1j)·final
    init = jnp.array([-1.0, 10.0, 1.0], dtype=dtype)
    final = jnp.array([1.0, -1.0, 1.0], dtype=dtype)
    if jnp.iscomplexobj(init):
        final = final * jnp.asarray(1 + 1j, dtype)

    def grads(p):  # the conjugated gradient of sum |p − final|², as alias_test applies it
        return jax.tree.map(jnp.conj, jax.grad(lambda q: jnp.sum(jnp.abs(q - final) ** 2))(p))

    return init, final, grads


OPTS = {
    "adam": dict(learning_rate=1e-1),
    "adamw": dict(learning_rate=1e-1),
    "nadam": dict(learning_rate=1e-2),
    "nadamw": dict(learning_rate=1e-2),
    "rmsprop": dict(learning_rate=5e-3),
    "adagrad": dict(learning_rate=1.0),
    "sgd": dict(learning_rate=1e-3, momentum=0.9),
}


@pytest.mark.parametrize("name", OPTS)
def test_rules_match_optax_on_complex_params(name):  # AliasTest.test_optimization, complex64
    # (real parameters: tests/test_optim.py compares every rule with optax over 1,000 steps)
    init, _, grads = _parabola(jnp.complex64)
    ours = _run(getattr(O, name)(**OPTS[name]), init, grads)
    with _standard():
        theirs = _run(getattr(optax, name)(**OPTS[name]), init, grads)
    for t, (a, b) in enumerate(zip(ours, theirs)):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6, err_msg=f"step {t + 1}")


def test_complex_adam_uses_the_squared_modulus():  # the issue's own example
    p = jnp.array([1 + 1j], jnp.complex64)
    opt = O.adam(0.1)
    u, state = opt.update(p, opt.init(p), p)
    # m̂ = g, v̂ = |g|² = 2: the step is −0.1·g/√2, not −0.1·g/√(g·g) = −0.1 (rtol: the
    # float32 bias correction 1 − 0.999 moves √v̂ by 6.7e-6 relative, in optax too)
    np.testing.assert_allclose(u, [-0.1 / np.sqrt(2) * (1 + 1j)], rtol=1e-5)
    with _standard():
        theirs = optax.adam(0.1)
        v, _ = theirs.update(p, theirs.init(p), p)
    np.testing.assert_allclose(u, v, rtol=1e-6)
    assert state[0].nu.dtype == jnp.complex64 and float(jnp.imag(state[0].nu[0])) == 0.0


@pytest.mark.parametrize("name", ["adam", "adagrad"])
def test_complex_parabola_converges(name):  # AliasTest.test_optimization, complex64
    init, final, grads = _parabola(jnp.complex64)
    opt = getattr(O, name)(**OPTS[name])

    @jax.jit
    def solve(p):
        def step(carry, _):
            p, s = carry
            u, s = opt.update(grads(p), s, p)
            return (optax.apply_updates(p, u), s), None

        return jax.lax.scan(step, (p, opt.init(p)), None, length=10_000)[0][0]

    np.testing.assert_allclose(solve(init), final, rtol=3e-2, atol=3e-2)


def test_nadam_is_adam_with_nesterov():
    assert O.nadam(1e-2).static["nesterov"] and O.nadamw(1e-2).static["nesterov"]
    assert O.nadamw(1e-2, weight_decay=0.3).hyperparams["weight_decay"] == pytest.approx(0.3)


def test_extra_args_are_accepted():  # GradientTransformationExtraArgs, as optax's rules
    params = {"w": jnp.ones(2)}
    opt = O.adam(0.1)
    assert isinstance(opt, optax.GradientTransformationExtraArgs)
    u, _ = opt.update(params, opt.init(params), params, value=jnp.float32(1.0), grad=params)
    chained = optax.chain(optax.clip_by_global_norm(1.0), O.sgd(0.1))
    v, _ = chained.update(params, chained.init(params), params, value=jnp.float32(1.0))
    np.testing.assert_allclose(u["w"], [-0.1, -0.1], rtol=1e-5)
    np.testing.assert_allclose(v["w"], -0.1 / np.sqrt(2), rtol=1e-6)


@pytest.mark.parametrize("dtype", ["bogus", jnp.int32, 3])
def test_mu_dtype_must_be_a_float_dtype(dtype):
    with pytest.raises(UsageError, match="`mu_dtype` must be a"):
        O.adam(0.1, mu_dtype=dtype)
    with pytest.raises(UsageError, match="`accumulator_dtype` must be a"):
        O.sgd(0.1, momentum=0.9, accumulator_dtype=dtype)


def test_mu_dtype_bfloat16_like_optax():
    params = {"w": jnp.ones(3)}
    state = O.adam(0.1, mu_dtype=jnp.bfloat16).init(params)
    with _standard():
        theirs = optax.adam(0.1, mu_dtype=jnp.bfloat16).init(params)
    assert state[0].mu["w"].dtype == theirs[0].mu["w"].dtype == jnp.bfloat16
