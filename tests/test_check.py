"""gdjax.check: hand-written backprop vs autodiff vs finite differences.

Planted bugs have closed-form errors: at G1's example point a = 5, b = 3, c = 2
(J = 3(a + b·c)) the true dJ/db = 3c = 6 and dJ/du = 3.
"""

from __future__ import annotations

import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gdjax as gd
from gdjax.check import Report, Row, check_backprop, check_derivative
from gdjax.models import graph, scalar

G1 = graph.G1
SYM = G1.loss_symbol  # G1's loss is J in the document


def _g1_backprop(bug: str | None):
    """G1's backward pass with an optional planted bug."""

    def backprop(params, batch=None):
        a, b, c = params["a"], params["b"], params["c"]
        J = 3 * (a + b * c)
        dv = 3 * jnp.ones_like(a)
        du = 2 * dv if bug == "adjoint" else dv  # the adjoint bug leaves the grads right
        db = 2 * c * dv if bug == "grad" else c * dv
        return gd.Backprop(J, {"a": dv, "b": db, "c": b * dv}, {"u": du, "v": dv})

    return backprop


def _planted(bug: str, **fields) -> gd.Model:
    """G1 with a planted bug; its rows say dL/d... unless ``loss_symbol`` is given."""
    return dataclasses.replace(G1, backprop=_g1_backprop(bug), **{"loss_symbol": "L", **fields})


# --------------------------------------------------------------------------- registry models


def test_g1_passes_with_roundoff_sized_errors():
    report = check_backprop("G1", points=50)
    assert report.ok and report.failures == ()
    assert report.points == 50 and report.skipped == ()
    names = [r.name for r in report.rows]
    assert names == [SYM, *(f"d{SYM}/d{k}" for k in "abc"), f"d{SYM}/du", f"d{SYM}/dv"]
    assert [r.kind for r in report.rows] == ["loss", "grad", "grad", "grad", "adjoint", "adjoint"]
    for row in report.rows:
        assert row.autodiff_abs <= 1e-12, row
        if row.kind != "loss":
            # J is bilinear: central differences are exact up to round-off ~ ε|J|/h
            assert row.fd_abs <= 1e-8 and row.fd_error <= 1e-6, row


def test_planted_wrong_gradient_is_caught_and_named_in_the_documents_words():
    report = check_backprop(_planted("grad", loss_symbol="J"), points=100)
    assert not report.ok
    assert report.failures == ("dJ/db",)
    row = next(r for r in report.rows if r.name == "dJ/db")
    assert row.autodiff_fails == 100 and row.fd_fails == 100
    assert row.failing_points[:3] == (0, 1, 2)
    # at the example point the planted dJ/db = 2·3c = 12 against the true 3c = 6
    point, hand, auto = check_backprop(_planted("grad"), points=1).rows[2].worst
    assert (point, hand, auto) == (0, 12.0, 6.0)
    table = report.table()
    assert "FAIL dJ/db: hand-written differs from autodiff by" in table
    assert "at 100/100 points" in table
    assert "hand-written vs autodiff" in table and "hand-written vs finite diff" in table
    assert str(report) == table


def test_planted_wrong_adjoint_is_caught_and_named():
    report = check_backprop(_planted("adjoint", loss_symbol="J"), points=20)
    assert report.failures == ("dJ/du",)  # every gradient leaf is still right
    row = next(r for r in report.rows if r.name == "dJ/du")
    assert row.kind == "adjoint" and row.autodiff_fails == 20
    assert row.autodiff_abs == pytest.approx(3.0)  # 2·3 against the true dJ/du = 3
    assert "FAIL dJ/du" in report.table()


def test_given_params_are_checked_at_point_zero():
    params = {"a": jnp.float32(1.0), "b": jnp.float32(-2.0), "c": jnp.float32(0.5)}
    row = check_backprop(_planted("grad"), params, points=1).rows[2]
    assert row.worst == (0, 3.0, 1.5)  # planted 2·3c against the true 3c, c = 0.5


def test_s1_model_and_both_leaf_name_plugins():
    report = check_backprop("S1", points=30)
    assert report.ok
    # Model.leaf_names: a sequence of names, or a to_named(tree) -> dict function
    named = check_backprop(
        dataclasses.replace(G1, leaf_names=("alpha", "beta", "gamma")), points=3
    )
    assert [r.name for r in named.rows[1:4]] == ["dJ/dalpha", "dJ/dbeta", "dJ/dgamma"]
    named = check_backprop(
        _planted("grad", leaf_names=lambda t: {"w1": t["c"], "w2": t["a"]}), points=3
    )
    assert [r.name for r in named.rows if r.kind == "grad"] == ["dL/dw1", "dL/dw2"]
    assert named.ok  # b, the leaf with the bug, is not one of the named ones


def test_same_key_same_points_other_key_other_points():
    r1 = check_backprop("G1", points=10, key=jax.random.PRNGKey(3))
    r2 = check_backprop("G1", points=10, key=jax.random.PRNGKey(3))
    r3 = check_backprop("G1", points=10, key=jax.random.key(4))  # new-style keys work too
    r4 = check_backprop("G1", points=10, key=4)
    assert r1 == r2
    assert r1.rows[1].fd_abs != r3.rows[1].fd_abs
    assert r4 == check_backprop("G1", points=10, key=4)


# --------------------------------------------------------------------------- your own pair


def _mlp_loss(params, batch):
    x, y = batch
    h = x
    for i, layer in enumerate(params):
        z = gd.name(h @ layer["W"] + layer["b"], f"z{i + 1}")
        h = jnp.tanh(z) if i < len(params) - 1 else z
    return jnp.sum((h - y) ** 2)


def _mlp_backprop(bug=None):
    def backprop(params, batch):
        x, y = batch
        hs, zs = [x], []
        for i, layer in enumerate(params):
            zs.append(hs[-1] @ layer["W"] + layer["b"])
            hs.append(jnp.tanh(zs[-1]) if i < len(params) - 1 else zs[-1])
        dh = 2 * (hs[-1] - y)
        grads, adjoints = [None] * len(params), {}
        for i in reversed(range(len(params))):
            last = i == len(params) - 1
            tanh_prime = 1 - jnp.tanh(zs[i]) if bug == "adjoint" else 1 - jnp.tanh(zs[i]) ** 2
            dz = dh if last else dh * tanh_prime
            adjoints[f"z{i + 1}"] = dz
            dW = hs[i].T @ dz
            grads[i] = {"W": 1.01 * dW if (bug == "grad" and last) else dW, "b": dz.sum(0)}
            dh = dz @ params[i]["W"].T
        return gd.Backprop(jnp.sum((hs[-1] - y) ** 2), grads, adjoints)

    return backprop


@pytest.fixture(scope="module")
def mlp_point():
    k = jax.random.split(jax.random.PRNGKey(1), 4)
    params = [
        {"W": jax.random.normal(k[0], (3, 4)), "b": jnp.zeros(4)},
        {"W": jax.random.normal(k[1], (4, 2)), "b": jnp.zeros(2)},
    ]
    return params, (jax.random.normal(k[2], (5, 3)), jax.random.normal(k[3], (5, 2)))


@pytest.mark.parametrize(
    ("bug", "failures"),
    [
        (None, ()),
        ("grad", ("dL/dlayers[1].W",)),
        ("adjoint", ("dL/dlayers[0].W", "dL/dlayers[0].b", "dL/dz1")),
    ],
)
def test_your_own_pair_with_list_of_dicts_params(mlp_point, bug, failures):
    params, batch = mlp_point
    report = check_backprop((_mlp_loss, _mlp_backprop(bug)), params, batch, points=20)
    assert report.failures == failures
    assert [r.name for r in report.rows][-2:] == ["dL/dz1", "dL/dz2"]
    for row in report.rows:
        if row.name not in failures:
            assert row.autodiff_rel <= 1e-10, row  # round-off, far below rtol = 1e-7
        else:
            assert row.autodiff_rel > 1e-3 and row.autodiff_fails == 20, row


def test_an_adjoint_the_loss_does_not_name_is_reported_not_passed():
    def loss(p, batch):
        return jnp.sum(jnp.sin(p["w"]) ** 2)  # no gd.name: "s" is invisible to autodiff

    def backprop(p, batch):
        s = jnp.sin(p["w"])
        return jnp.sum(s**2), {"w": 2 * s * jnp.cos(p["w"])}, {"s": 2 * s}

    report = check_backprop((loss, backprop), {"w": jnp.arange(3.0)}, points=5)
    assert not report.ok and report.failures == ("dL/ds",)
    row = report.rows[-1]
    assert row.status == "UNPROBED" and not row.ok
    assert "UNPROBED dL/ds: not checked" in report.table()
    assert "gd.name(..., 's')" in row.note
    assert all(r.ok for r in report.rows[:-1])


def test_finite_differences_catch_what_autodiff_cannot():
    """A wrong custom_jvp fools jax.grad; the finite differences still see the truth."""

    @jax.custom_jvp
    def wrong_sin(x):
        return jnp.sin(x)

    wrong_sin.defjvp(
        lambda primals, tangents: (jnp.sin(primals[0]), 2 * jnp.cos(primals[0]) * tangents[0])
    )

    def backprop(p, batch):
        return jnp.sum(wrong_sin(p["x"])), {"x": 2 * jnp.cos(p["x"])}

    pair = (lambda p, b: jnp.sum(wrong_sin(p["x"])), backprop)
    report = check_backprop(pair, {"x": jnp.ones(2)}, points=30)
    row = report.rows[1]
    assert row.autodiff_fails == 0 and row.fd_fails == 30
    assert "differs from finite differences" in report.table()
    at_one = check_backprop(pair, {"x": jnp.ones(2)}, points=1).rows[1]
    assert at_one.fd_abs == pytest.approx(np.cos(1.0), rel=1e-8)  # |2cos(1) − cos(1)|


def test_points_where_the_loss_is_not_finite_are_skipped_and_reported():
    def loss(p, batch):
        return jnp.sqrt(p["x"])

    def backprop(p, batch):
        return jnp.sqrt(p["x"]), {"x": 0.5 / jnp.sqrt(p["x"])}

    report = check_backprop((loss, backprop), {"x": jnp.float32(0.3)}, points=40, noise=2.0)
    assert report.ok and 0 < len(report.skipped) < 40 and 0 not in report.skipped
    assert "skipped" in report.table()
    with pytest.raises(ValueError, match="not finite at the given point"):
        check_backprop((loss, backprop), {"x": jnp.float32(-1.0)}, points=2)


# --------------------------------------------------------------------------- check_derivative


def test_s1_as_printed_in_seed_003_is_flagged_except_where_x_squared_is_x():
    report = check_derivative(scalar.function, scalar.printed_derivative)  # 21 points on [-2, 2]
    assert not report.ok and report.failures == ("df/dx",)
    row = report.rows[0]
    wrong = [report.xs[i] for i in row.failing_points]
    assert wrong == [x for x in np.linspace(-2, 2, 21) if x not in (0.0, 1.0)]
    assert row.autodiff_fails == 19 and row.fd_fails == 19
    assert "wrong at x = -2, -1.8" in report.table()


def test_s1_corrected_derivative_passes():
    report = check_derivative(scalar.function, scalar.derivative, np.linspace(-2.5, 2.5, 41))
    assert report.ok
    assert report.rows[0].autodiff_rel <= 1e-13


def test_check_derivative_takes_formula_strings():
    report = check_derivative("sin(t)**2", "2*sin(t)*cos(t)", [0.1, 1.0, 3.0], var="t")
    assert report.ok and report.subject == "df/dt" and report.xs == (0.1, 1.0, 3.0)
    bad = check_derivative("sin(t)**2", "2*sin(t)", [0.1, 1.0, 3.0], var="t")
    assert bad.rows[0].failing_points == (0, 1, 2)


def test_check_derivative_skips_points_outside_the_domain():
    report = check_derivative(jnp.log, lambda x: 1 / x, [-1.0, 0.5, 2.0])
    assert report.ok and report.skipped == (0,)
    with pytest.raises(ValueError, match="not finite at any"):
        check_derivative(jnp.log, lambda x: 1 / x, [-1.0, -2.0])


# --------------------------------------------------------------------------- the report value


def test_report_is_a_frozen_json_ready_value():
    report = check_backprop(_planted("grad", loss_symbol="J"), points=5)
    assert isinstance(report, Report) and isinstance(report.rows[0], Row)
    with pytest.raises(AttributeError):
        report.points = 3  # type: ignore[misc]
    d = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert d["ok"] is False and d["failures"] == ["dJ/db"] and d["subject"] == "G1"
    row = next(r for r in d["rows"] if r["name"] == "dJ/db")
    assert row["ok"] is False and row["kind"] == "grad" and row["autodiff_fails"] == 5
    assert row["worst"]["point"] in range(5)
    assert d["rows"][0]["fd_abs"] == "nan"  # the loss row has no finite differences


# --------------------------------------------------------------------------- bad input


def test_unknown_model_id():
    with pytest.raises(ValueError, match="Unknown model id 'G9'"):
        check_backprop("G9")


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"a": 1.0, "b": 2.0}, "same structure"),
        ({"a": jnp.ones(2), "b": 2.0, "c": 1.0}, r"params\['a'\]` has shape \(2,\)"),
        ({"a": jnp.nan, "b": 2.0, "c": 1.0}, "non-finite"),
    ],
)
def test_params_that_do_not_match_the_model(params, match):
    with pytest.raises(ValueError, match=match):
        check_backprop("G1", params)


def test_nan_in_the_batch(mlp_point):
    params, (x, y) = mlp_point
    with pytest.raises(ValueError, match=r"batch\[0\]"):
        check_backprop((_mlp_loss, _mlp_backprop()), params, (x.at[0, 0].set(jnp.nan), y))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"model_or_functions": 42}, TypeError, "registry id"),
        ({"model_or_functions": (jnp.sum, 3)}, TypeError, "registry id"),
        ({"points": 0}, ValueError, ">= 1"),
        ({"points": 2.5}, TypeError, "`points` must be an int"),
        ({"key": "seed"}, TypeError, "`key`"),
        ({"rtol": -1.0}, ValueError, "`rtol`"),
    ],
)
def test_wrong_argument_types(kwargs, error, match):
    kwargs = {"model_or_functions": "G1", **kwargs}
    with pytest.raises(error, match=match):
        check_backprop(**kwargs)


def test_your_own_pair_needs_params_of_floats_and_a_well_formed_backprop():
    loss = lambda p, b: jnp.sum(p["w"] ** 2)  # noqa: E731
    with pytest.raises(TypeError, match="pass `params`"):
        check_backprop((loss, loss))
    with pytest.raises(TypeError, match="must hold floats"):
        check_backprop((loss, loss), {"w": jnp.arange(3)})
    with pytest.raises(TypeError, match=r"must return a gd\.Backprop"):
        check_backprop((loss, loss), {"w": jnp.ones(3)})
    with pytest.raises(ValueError, match="grads returned by backprop"):
        check_backprop((loss, lambda p, b: (loss(p, b), {"v": 2 * p["w"]})), {"w": jnp.ones(3)})


def test_check_derivative_bad_input():
    with pytest.raises(ValueError, match="scalar to a scalar"):
        check_derivative(lambda x: jnp.stack([x, x]), jnp.cos)
    with pytest.raises(ValueError, match="NaN or inf"):
        check_derivative(jnp.sin, jnp.cos, [0.0, float("nan")])
    with pytest.raises(TypeError, match="`df` must be a function"):
        check_derivative(jnp.sin, 3.0)


def test_zero_atol_gives_exact_relative_errors_without_warnings():
    with np.errstate(all="raise"):
        right = check_derivative("x**2", "2*x", [0.0, 1.0], atol=0.0)
        wrong = check_derivative("x**2", "2*x + 1", [0.0, 1.0], atol=0.0)
    assert right.ok and right.rows[0].autodiff_rel == 0.0
    assert wrong.rows[0].autodiff_rel == math.inf  # 1 against an exact 0 at x = 0
    assert wrong.to_dict()["rows"][0]["autodiff_rel"] == "inf"
