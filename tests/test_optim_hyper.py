"""gdjax.optim: hyperparameters are data (pytree leaves), options are static.

A rule is an optax transformation and a pytree: jit compiles once per rule and choice
of options, ``partition``/``combine`` split it for the training engine, a rule of K
settings runs under vmap, and every concrete element is checked as a scalar is.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gdjax as gd
from tests.helpers import assert_tree_allclose
from tests.test_optim import CASES, _data, _kwargs, _params, _run, _trajectories

O = gd.optim


def _grads(params, k=0):
    return jax.tree.map(lambda p: jnp.sin(p + k), params)


# ---------------------------------------------------------------------------------------
# A rule is an optax transformation.


def test_a_rule_is_an_optax_transformation_with_extra_args():
    params = _params(jnp.float32)
    opt = O.adam(1e-3)
    assert isinstance(opt, O.Rule)
    assert isinstance(opt, optax.GradientTransformation)
    assert isinstance(opt, optax.GradientTransformationExtraArgs)
    state = opt.init(params)
    g = _grads(params)
    plain = opt.update(g, state, params)
    extra = opt.update(g, state, params, value=jnp.float32(1.0), grad=g, value_fn=jnp.sum)
    assert_tree_allclose(extra, plain, rtol=0)


def test_drops_into_optax_chain_before_or_after_optax_transforms():
    data, params = _data(jnp.float32, steps=200), _params(jnp.float32)
    ours = (
        optax.chain(O.adam(1e-2), optax.clip(1e-3)),
        optax.chain(optax.clip_by_global_norm(0.5), O.sgd(0.05, 0.9)),
    )
    theirs = (
        optax.chain(optax.adam(1e-2), optax.clip(1e-3)),
        optax.chain(optax.clip_by_global_norm(0.5), optax.sgd(0.05, 0.9)),
    )
    with jax.numpy_dtype_promotion("standard"):
        ours, theirs = _trajectories(ours, params, data), _trajectories(theirs, params, data)
    assert_tree_allclose(ours, theirs, rtol=1e-6)


# ---------------------------------------------------------------------------------------
# One compilation per static setting.


def test_jit_traces_once_per_static_setting():
    params = _params(jnp.float32)
    traces = 0

    def update(opt, g, s, p):
        nonlocal traces
        traces += 1
        return opt.update(g, s, p)

    f = jax.jit(update)
    groups = [
        [O.sgd(0.1), O.sgd(0.2), O.sgd(jnp.float32(0.5)), O.sgd(1)],
        [O.adam(1e-3), O.adam(3e-3, b1=0.8), O.adam(1e-2, b2=0.99, eps=1e-6, eps_root=1e-9)],
        [O.sgd(0.1, momentum=0.9), O.sgd(0.3, momentum=0.5)],
        [O.sgd(0.1, momentum=0.9, nesterov=True)],  # another option: another program
        [O.adam(O.cosine_decay(0.1, 100)), O.adam(O.cosine_decay(0.3, 100, alpha=0.1)),
         O.adam(O.cosine_decay(0.1, 200))],  # a step count is a number too
        [O.adamw(0.1, weight_decay=0.1, mask={"w": True, "b": False}),
         O.adamw(0.2, weight_decay=0.3, mask={"w": True, "b": False})],
    ]  # fmt: skip
    results = []
    for expected, group in enumerate(groups, start=1):
        for opt in group:
            results.append(f(opt, _grads(params), opt.init(params), params))
        assert traces == expected, group
    # The numbers did reach the compiled program.
    assert not np.allclose(results[0][0]["w"], results[1][0]["w"])
    again = O.sgd(0.2)
    assert_tree_allclose(results[1][0], again.update(_grads(params), again.init(params), params)[0])


def test_static_part_is_a_cache_key():
    s1, _ = O.partition(O.sgd(0.1))
    s2, leaves2 = O.partition(O.sgd(0.2))
    assert s1 == s2 and hash(s1) == hash(s2)
    assert float(leaves2["hyperparams"]["learning_rate"]) == pytest.approx(0.2)
    a, _ = O.partition(O.sgd(0.1, nesterov=True, momentum=0.9))
    b, _ = O.partition(O.sgd(0.1, momentum=0.9))
    assert a != b
    assert O.partition(O.adam(0.1))[0] != O.partition(O.adamw(0.1))[0]
    assert O.partition(O.adam(0.1))[0] != O.partition(O.adam(0.1, mu_dtype=jnp.bfloat16))[0]
    schedule = O.partition(O.sgd(O.exponential_decay(0.1, 10, 0.5)))[0]
    assert schedule != s1 and schedule == O.partition(O.sgd(O.exponential_decay(1, 10, 0.9)))[0]
    assert schedule == O.partition(O.sgd(O.exponential_decay(0.1, 20, 0.5)))[0]  # a leaf
    assert schedule != O.partition(O.sgd(O.exponential_decay(0.1, 20, 0.5, staircase=True)))[0]


def test_a_rules_static_part_is_made_once_and_its_leaves_are_fresh():
    rule = O.sgd(0.1, momentum=0.9)
    (s1, leaves1), (s2, leaves2) = O.partition(rule), O.partition(rule)
    assert s1 is s2  # made once per rule
    leaves1["hyperparams"]["learning_rate"] = jnp.float32(7.0)  # the caller's own dict
    assert float(leaves2["hyperparams"]["learning_rate"]) == pytest.approx(0.1)
    assert float(O.partition(rule)[1]["hyperparams"]["learning_rate"]) == pytest.approx(0.1)
    assert O.partition(rule.replace(learning_rate=0.2))[0] == s1
    assert O.partition(rule.replace(nesterov=True))[0] != s1  # a new rule: its own part


def test_a_schedule_function_of_your_own_is_static_by_identity():
    def mine(t):
        return 0.1 * 0.5 ** (t / 10)

    a, leaves = O.partition(O.sgd(mine))
    assert a == O.partition(O.sgd(mine))[0]
    assert a != O.partition(O.sgd(lambda t: 0.1 * 0.5 ** (t / 10)))[0]
    assert leaves["hyperparams"] == {}


def test_other_transformations_are_opaque():
    theirs = optax.adam(1e-3)
    static, leaves = O.partition(theirs)
    assert leaves == () and O.combine(static, leaves) is theirs
    assert static == O.partition(theirs)[0] and static != O.partition(optax.adam(1e-3))[0]
    chained = optax.chain(O.adam(1e-3), optax.clip(1.0))
    assert O.combine(*O.partition(chained)) is chained
    assert O.num_settings(theirs) is None and O.settings(theirs) == {}


# ---------------------------------------------------------------------------------------
# Pytree round trips.


def test_pytree_round_trip_rebuilds_the_same_rule():
    params = _params(jnp.float32)
    for opt in [
        O.sgd(0.1, 0.9, nesterov=True, momentum_style="ema"),
        O.rmsprop(0.01, centered=True, momentum=0.5),
        O.adamw(O.linear_warmup(0.1, 5, then=O.cosine_decay(0.1, 50)), weight_decay=0.1),
        O.adagrad(0.3, eps_in_sqrt=False),
    ]:
        leaves, treedef = jax.tree.flatten(opt)
        again = jax.tree.unflatten(treedef, leaves)
        assert isinstance(again, O.Rule) and jax.tree.structure(again) == treedef
        assert again.name == opt.name and again.static == opt.static
        rebuilt = O.combine(*O.partition(opt))
        state = opt.init(params)
        expected = opt.update(_grads(params), state, params)
        for other in (again, rebuilt, jax.tree.map(lambda x: x, opt)):
            assert_tree_allclose(other.update(_grads(params), state, params), expected, rtol=0)
        # combine inside jit: the leaves are traced, the result the same
        static, leaves = O.partition(opt)
        traced = jax.jit(
            lambda lv, s, st=static: O.combine(st, lv).update(_grads(params), s, params)
        )
        assert_tree_allclose(traced(leaves, state), expected, rtol=1e-6)


def test_leaves_are_float_arrays_with_key_paths():
    opt = O.adam(1e-3, b2=0.999)
    paths = {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(opt)[0]}
    assert ".hyperparams['learning_rate']" in paths and ".complements['b2']" in paths
    assert all(leaf.dtype == np.float32 and leaf.shape == () for leaf in jax.tree.leaves(opt))
    assert O.sgd(1).hyperparams["learning_rate"].dtype == np.float32  # an int: a float
    assert O.sgd(jnp.asarray(0.1, jnp.bfloat16)).hyperparams["learning_rate"].dtype == jnp.bfloat16
    # 1 − β rounded once from the Python number (as optax's), not 1 − float32(β)
    assert opt._core.complements["b2"] == np.float32(1 - 0.999)
    assert opt._core.complements["b2"] != 1 - np.float32(0.999)


def test_leaves_take_float64_under_x64(x64):
    assert O.sgd(0.1).hyperparams["learning_rate"].dtype == np.float64


def test_replace_checks_and_keeps_the_complements():
    opt = O.adam(1e-3, b2=0.999, nesterov=True)
    new = opt.replace(learning_rate=0.01)
    assert float(new.hyperparams["learning_rate"]) == pytest.approx(0.01)
    assert new.static == opt.static and new._core.complements == opt._core.complements
    assert float(opt.hyperparams["learning_rate"]) == pytest.approx(1e-3)  # unchanged
    with pytest.raises(ValueError, match=r"`b1` must lie in \[0.0, 1.0\)"):
        opt.replace(b1=1.0)
    with pytest.raises(ValueError, match="weight_decay_style"):
        O.adamw(0.1).replace(weight_decay_style="coupled")


def test_replacing_a_beta_leaf_alone_is_refused():
    params = _params(jnp.float32)
    opt = O.adam(0.1)
    leaves = dict(O.partition(opt)[1])
    leaves["hyperparams"] = {**leaves["hyperparams"], "b1": np.float32(0.5)}
    bad = O.combine(O.partition(opt)[0], leaves)
    with pytest.raises(ValueError, match=r"complements\['b1'\].*replace\(b1="):
        bad.update(_grads(params), bad.init(params), params)


def test_rules_match_optax_with_traced_hyperparameters():
    """The CASES again, each rule a jit argument (its numbers traced), against optax."""
    data, params = _data(jnp.float32), _params(jnp.float32)
    ours = [getattr(O, n)(**_kwargs(kw, "ours")) for n, kw in CASES]
    theirs = tuple(getattr(optax, n)(**_kwargs(kw, "theirs")) for n, kw in CASES)
    ours = jax.jit(lambda opts, p, d: [_run(o, p, d) for o in opts])(ours, params, data)
    with jax.numpy_dtype_promotion("standard"):
        theirs = _trajectories(theirs, params, data)
    for i, (a, b) in enumerate(zip(ours, theirs)):
        # Bit-identical to the rules with constants but for XLA's constant folding: 1e-7.
        assert_tree_allclose(a, b, rtol=1e-6, err_msg=str(CASES[i]))


# ---------------------------------------------------------------------------------------
# K settings.


def _loop_and_vmap(rule, scalar_rules, steps=200):
    data, params = _data(jnp.float32, steps=steps), _params(jnp.float32)
    swept = jax.jit(jax.vmap(_run, in_axes=(0, None, None)))(rule, params, data)
    looped = _trajectories(tuple(scalar_rules), params, data)
    for i, one in enumerate(looped):
        assert_tree_allclose(jax.tree.map(lambda a, i=i: a[i], swept), one, rtol=1e-6)
    return swept


def test_rule_of_k_settings_under_vmap_equals_a_loop():
    lrs = jnp.logspace(-3, -1, 4)
    moms = jnp.asarray([0.0, 0.5, 0.9, 0.95])
    rule = O.sgd(lrs, momentum=moms, nesterov=True)
    assert O.num_settings(rule) == rule.num_settings == 4
    assert set(O.settings(rule)) == {"learning_rate", "momentum"}
    singles = [O.sgd(lrs[i], momentum=moms[i], nesterov=True) for i in range(4)]
    swept = _loop_and_vmap(rule, singles)
    assert len({float(w) for w in swept["w"][:, -1, 0]}) == 4  # four different runs
    _loop_and_vmap(rule, [O.setting(rule, i) for i in range(4)])


def test_scalars_broadcast_and_schedules_sweep_too():
    b2 = jnp.asarray([0.9, 0.99, 0.999])
    inits = jnp.asarray([0.01, 0.02, 0.05])
    rule = O.adam(O.cosine_decay(inits, 150, alpha=0.1), b1=0.8, b2=b2)
    assert all(leaf.shape == (3,) for leaf in jax.tree.leaves(rule))
    assert set(O.settings(rule)) == {"learning_rate.init_value", "b2"}
    singles = [O.adam(O.cosine_decay(inits[i], 150, alpha=0.1), b1=0.8, b2=b2[i]) for i in range(3)]
    _loop_and_vmap(rule, singles)


def test_float64_arrays_give_each_setting_the_python_float_rule():
    lrs, b2s = [1e-2, 3e-2], [0.99, 0.999]
    rule = O.adam(np.asarray(lrs), b2=np.asarray(b2s))  # 1 − β in double, as from floats
    _loop_and_vmap(rule, [O.adam(lr, b2=b2) for lr, b2 in zip(lrs, b2s)])


def test_vmap_over_a_schedule_of_k_settings():
    schedule = O.exponential_decay(jnp.asarray([0.1, 0.2, 0.4]), 10, 0.5)
    assert O.num_settings(schedule) == 3
    swept = jax.vmap(lambda s: s(20))(schedule)
    np.testing.assert_allclose(swept, [0.025, 0.05, 0.1], rtol=1e-6)
    with pytest.raises(ValueError, match=r"3 settings.*gd\.sweep.*jax\.vmap"):
        schedule(20)


def test_rule_of_k_settings_refuses_to_run_alone():
    params = _params(jnp.float32)
    rule = O.adam(jnp.asarray([1e-3, 1e-2]))
    state = jax.vmap(lambda r: r.init(params))(rule)
    for call in (
        lambda: rule.init(params),
        lambda: rule.update(_grads(params), state, params),
        lambda: jax.jit(lambda r: r.init(params))(rule),  # traced, but not vmapped
    ):
        with pytest.raises(ValueError, match=r"2 settings.*gd\.sweep.*jax\.vmap"):
            call()
    with pytest.raises(ValueError, match="holds one setting"):
        O.setting(O.adam(1e-3), 0)
    with pytest.raises(ValueError, match="below the rule's 2 settings"):
        O.setting(rule, 2)


# ---------------------------------------------------------------------------------------
# Refused elements and shapes.


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda: O.sgd(0.1, momentum=jnp.asarray([0.0, 0.5, 0.9, 1.0])),
         r"`momentum\[3\]` must lie in \[0.0, 1.0\), got 1.0"),
        (lambda: O.sgd(jnp.asarray([0.1, -0.1])),
         r"`learning_rate\[1\]` must be a positive finite number, got -0.1"),
        (lambda: O.adam(0.1, eps=np.asarray([1e-8, 0.0])), r"`eps\[1\]` must be a positive"),
        (lambda: O.adamw(0.1, weight_decay=jnp.asarray([0.1, -1.0])), r"`weight_decay\[1\]`"),
        (lambda: O.sgd(O.exponential_decay(jnp.asarray([0.1, -0.1]), 10, 0.5)),
         r"`learning_rate` is the schedule .* value at step 0 \(setting 1\) is -0.1"),
        (lambda: O.exponential_decay(jnp.asarray([0.1, jnp.nan]), 10, 0.5), r"`init_value\[1\]`"),
        (lambda: O.sgd(O.piecewise_constant(0.1, {10: jnp.asarray([0.1, -1.0])})),
         r"value at step 10 \(setting 1\) is -0.1"),
        (lambda: O.sgd(jnp.full(3, 0.1), momentum=jnp.asarray([0.1, 0.2])),
         r"`learning_rate` has 3 settings but `momentum` has 2"),
        (lambda: O.sgd(O.cosine_decay(jnp.full(3, 0.1), 10), momentum=jnp.asarray([0.1, 0.2])),
         r"`learning_rate` has 3 settings but `momentum` has 2"),
        (lambda: O.sgd(jnp.ones((2, 2))), r"`learning_rate` must be a scalar, or a 1-D array"),
        (lambda: O.sgd(jnp.zeros(0)), r"`learning_rate` is an empty array"),
        (lambda: O.sgd([0.1, 0.2]), r"`learning_rate` must be a number or an array.*jnp.asarray"),
        (lambda: O.sgd(lambda t: -0.1), r"`learning_rate\(0\)` must be a non-negative"),
        (lambda: O.adamw(0.1, weight_decay=lambda t: jnp.float32(-1)), r"`weight_decay\(0\)`"),
        (lambda: O.sgd(O.linear_warmup(0.1, 10, then=lambda t: -0.1)),
         r"value at step 10 is -0.1"),
        (lambda: O.adam(0.1, b1=O.constant(0.9)), r"`b1` must be a number"),
    ],
)  # fmt: skip
def test_bad_elements_and_shapes_are_refused_by_name(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_a_schedule_function_whose_first_value_is_traced_passes():
    @jax.jit
    def first_update(lr):
        opt = O.sgd(lambda t: lr * 0.5 ** t.astype(lr.dtype))  # traced at t = 0: unchecked
        params = {"w": jnp.ones(2)}
        return opt.update({"w": jnp.ones(2)}, opt.init(params), params)[0]["w"]

    np.testing.assert_allclose(first_update(jnp.float32(0.1)), [-0.1, -0.1], rtol=1e-6)


def test_a_schedule_rule_builds_inside_jit_and_its_check_still_runs():
    @jax.jit
    def step(g, lr):
        # concrete schedule numbers are checked while jit traces; a traced `then` is not
        later = lambda t: lr * jnp.ones((), jnp.float32)  # noqa: E731
        opt = O.adam(O.linear_warmup(0.1, 5, then=later))
        p = {"w": jnp.ones(2)}
        return opt.update({"w": g}, opt.init(p), p)[0]["w"]

    assert step(jnp.ones(2), jnp.float32(0.1)).shape == (2,)
    with pytest.raises(ValueError, match=r"value at step 50 is -0\.01"):
        jax.jit(lambda: O.adam(O.warmup_cosine_decay_schedule(0.0, 0.1, 5, 50, -0.01)).init({}))()


def test_a_rule_built_again_with_new_numbers_is_still_checked(monkeypatch):
    """make() builds a rule's transform once per rule, options and structure (to check
    the options); a new number is checked on its own, a bad option every time."""
    from gdjax.optim import _split

    builds = []
    spec = _split._SPECS["sgd"]
    monkeypatch.setitem(
        _split._SPECS,
        "sgd",
        _split._Spec(lambda **a: builds.append(a) or spec.build(**a), spec.kinds, spec.public),
    )
    monkeypatch.setattr(_split, "_BUILT", set())
    monkeypatch.setattr(_split, "_MADE", {})  # nothing remembered from other tests
    O.sgd(0.1, momentum=0.9)
    O.sgd(0.2, momentum=0.5)
    assert len(builds) == 1  # the same options: built (checked) once
    O.sgd(0.2, momentum=0.5, nesterov=True)
    assert len(builds) == 2  # a new option is checked by a build of its own
    with pytest.raises(gd.UsageError, match="learning_rate"):
        O.sgd(-0.1, momentum=0.9)
    with pytest.raises(gd.UsageError, match="momentum"):
        O.sgd(0.1, momentum=1.0)
    for _ in range(2):  # a bad option is never remembered as built
        with pytest.raises(gd.UsageError, match="accumulator_dtype"):
            O.sgd(0.1, momentum=0.9, accumulator_dtype=jnp.int32)


def test_the_same_immutable_arguments_give_back_the_rule_built_from_them(monkeypatch):
    """A rule is a value: make() remembers the rules built from numbers, strings, None and
    concrete jax.Arrays (by identity), so a sweep's grid is checked once; anything that
    could change or differ (a NumPy array, -0.0, an int for a float, x64) is built anew."""
    from gdjax.optim import _split

    monkeypatch.setattr(_split, "_MADE", {})
    lrs = jnp.asarray([0.1, 0.2, 0.3])
    opt = O.sgd(lrs, momentum=0.9)
    assert O.sgd(lrs, momentum=0.9) is opt
    assert O.sgd(jnp.asarray([0.1, 0.2, 0.3]), momentum=0.9) is not opt  # another array
    assert O.sgd(lrs, momentum=0.5) is not opt
    assert O.adam(1e-3, nesterov=True) is O.adam(1e-3, nesterov=True)
    host = np.asarray([0.1, 0.2])  # may be written to after the rule is built
    assert O.sgd(host) is not O.sgd(host)
    assert O.sgd(1.0) is not O.sgd(1)  # an int is not a float (the leaf is the same)
    m0, m1 = O.sgd(0.1, momentum=0.0), O.sgd(0.1, momentum=-0.0)
    assert m0 is not m1 and np.signbit(m1.hyperparams["momentum"])
    with jax.enable_x64(True):
        assert O.sgd(0.1).hyperparams["learning_rate"].dtype == np.float64
    assert O.sgd(0.1).hyperparams["learning_rate"].dtype == np.float32
    # a traced value is never remembered (it must not outlive its trace)
    jax.jit(lambda lr: O.sgd(lr).hyperparams["learning_rate"])(jnp.float32(0.1))
    kept = [v for _, args in _split._MADE.values() for v in args]
    assert not any(isinstance(v, jax.core.Tracer) for v in kept)
    # a deleted array is looked at again: the error, not the remembered rule
    gone = jnp.asarray([0.1, 0.2])
    O.sgd(gone)
    gone.delete()
    with pytest.raises(RuntimeError, match="deleted"):
        O.sgd(gone)
    # the memo is bounded
    monkeypatch.setattr(_split, "_MADE_MAX", 4)
    for i in range(10):
        O.sgd(0.1 + i)
    assert len(_split._MADE) <= 4
