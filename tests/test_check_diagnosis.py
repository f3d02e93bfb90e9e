"""gdjax.check at scale, and its diagnosis: first_wrong, inherits, causes, kinks, NumPy, HVP.

Every planted error has a closed form: a factor, a sign, a transpose, a missing consumer,
or one element of a leaf off by 1%; the expected values are computed by hand below.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gdjax as gd
from gdjax.check import check_backprop, check_derivative, check_hvp, default_points

G1 = gd.models.get("G1")
C2 = gd.models.get("C2")


def _g1(bug: str):
    """G1 (J = 3(a + b·c), u = b·c, v = a + u) with a wrong dJ/du that b and c inherit."""

    def backprop(params, batch=None):
        a, b, c = params["a"], params["b"], params["c"]
        dv = 3 * jnp.ones_like(a)
        du = {"factor": 2 * dv, "sign": -dv}[bug]
        return gd.Backprop(3 * (a + b * c), {"a": dv, "b": c * du, "c": b * du},
                           {"u": du, "v": dv})

    return dataclasses.replace(G1, backprop=backprop)


@pytest.mark.parametrize(("bug", "cause"), [("factor", "factor 2"), ("sign", "sign")])
def test_first_wrong_is_the_adjoint_and_the_leaves_inherit_it(bug, cause):
    report = check_backprop(_g1(bug), points=10)
    assert report.first_wrong == "dJ/du"
    rows = {r.name: r for r in report.rows}
    assert rows["dJ/du"].cause == cause and rows["dJ/du"].inherits is None
    assert rows["dJ/db"].inherits == "dJ/du" and rows["dJ/dc"].inherits == "dJ/du"
    assert rows["dJ/da"].ok and rows["dJ/dv"].ok and rows["dJ/da"].cause is None
    assert rows["dJ/du"].worst[1:] == ((6.0, 3.0) if bug == "factor" else (-3.0, 3.0))
    assert "dJ/db, dJ/dc inherit the error of dJ/du" in report.table()


def test_a_leaf_with_its_own_error_below_a_wrong_adjoint_is_not_an_inheritor():
    def backprop(params, batch=None):
        a, b, c = params["a"], params["b"], params["c"]
        dv = 3 * jnp.ones_like(a)
        du = 2 * dv  # wrong, and dJ/dc = b·du inherits it
        return gd.Backprop(3 * (a + b * c), {"a": dv, "b": c * du + 1.0, "c": b * du},
                           {"u": du, "v": dv})

    report = check_backprop(dataclasses.replace(G1, backprop=backprop), points=5)
    rows = {r.name: r for r in report.rows}
    assert report.first_wrong == "dJ/du"
    assert rows["dJ/dc"].inherits == "dJ/du"
    assert rows["dJ/db"].inherits is None and rows["dJ/db"].cause == "other"


def _logistic(bug: str | None):
    """m = 5 examples of logistic regression, J = mean of the cross-entropies."""

    def loss(p, batch):
        x, y = batch
        z = gd.name(x @ p["w"] + p["b"], "z")
        return jnp.mean(jnp.logaddexp(0.0, z) - y * z)

    def backprop(p, batch):
        x, y = batch
        z = x @ p["w"] + p["b"]
        m = x.shape[0]
        dz = (jax.nn.sigmoid(z) - y) / m
        if bug == "sign":
            dz = -dz
        if bug == "sum":
            dz = dz * m  # the sum of the per-example losses, not their mean
        dw = x.T @ dz
        return loss(p, batch), {"w": dw, "b": dz.sum()}, {"z": dz}

    return loss, backprop


@pytest.fixture(scope="module")
def logistic_point():
    k = jax.random.split(jax.random.PRNGKey(0), 2)
    x = jax.random.normal(k[0], (5, 3))
    y = (jax.random.uniform(k[1], (5,)) > 0.5).astype(jnp.float32)
    return {"w": jnp.array([0.5, -1.0, 0.2]), "b": jnp.array(0.1)}, (x, y)


@pytest.mark.parametrize(
    ("bug", "cause"), [("sign", "sign"), ("sum", "factor 5 = m: sum instead of mean?")]
)
def test_causes_in_the_documents_words(logistic_point, bug, cause):
    report = check_backprop(_logistic(bug), *logistic_point, points=10)
    rows = {r.name: r for r in report.rows}
    assert report.first_wrong == "dL/dz" and rows["dL/dz"].cause == cause
    assert rows["dL/dw"].inherits == "dL/dz" and rows["dL/db"].inherits == "dL/dz"


def test_missing_branch_of_a_fan_out_names_the_consumer():
    """C2: f = a·b feeds v₀, v₁, v₂; dropping consumer 2 leaves df = v₀ + v₁ = 0.2."""

    def backprop(params, batch=None):
        a, b, v = params["a"], params["b"], params["v"]
        f_k = jnp.broadcast_to(a * b, v.shape)
        df = v[0] + v[1]
        return gd.Backprop(jnp.sum(v * f_k), {"a": b * df, "b": a * df, "v": f_k},
                           {"f": df, "f_k": v})

    report = check_backprop(dataclasses.replace(C2, backprop=backprop), points=5)
    rows = {r.name: r for r in report.rows}
    assert report.first_wrong == "dL/df"
    assert rows["dL/df"].cause.startswith("missing branch") and "f_k[2]" in rows["dL/df"].cause
    at_example = check_backprop(dataclasses.replace(C2, backprop=backprop), points=1)
    row = next(r for r in at_example.rows if r.name == "dL/df")
    assert row.worst[1:] == pytest.approx((0.2, 0.8))  # −0.2 + 0.4 against all three
    assert rows["dL/da"].inherits == "dL/df"


def test_missing_branch_between_two_consumers():
    def loss(p, b):
        u = gd.name(p["x"] * 2.0, "u")
        return jnp.sum(jnp.sin(u) + u**2)

    def backprop(p, b):
        u = p["x"] * 2.0
        du = jnp.cos(u)  # forgot the u² consumer: + 2u
        return loss(p, b), {"x": 2.0 * du}, {"u": du}

    report = check_backprop((loss, backprop), {"x": jnp.array([0.3, -1.2])}, points=4)
    cause = next(r for r in report.rows if r.name == "dL/du").cause
    assert cause == "missing branch: the contribution through pow1 = u**2 is missing"


def test_transpose_square_and_non_square():
    def loss(p, b):
        return jnp.sum(jnp.tanh(b @ p["W"]))

    def backprop(bug):
        def bp(p, b):
            dz = 1 - jnp.tanh(b @ p["W"]) ** 2
            dW = b.T @ dz
            return loss(p, b), {"W": dW.T if bug else dW}
        return bp

    x = jax.random.normal(jax.random.PRNGKey(2), (6, 3))
    square = check_backprop((loss, backprop(True)), {"W": jnp.eye(3) * 0.5 + 0.1}, x, points=3)
    assert square.rows[1].cause == "transpose" and square.first_wrong == "dL/dW"
    wide = check_backprop((loss, backprop(True)), {"W": jnp.ones((3, 4)) * 0.1}, x, points=3)
    row = next(r for r in wide.rows if r.name == "dL/dW")
    assert row.cause == "transpose" and "(4, 3)" in row.note and not wide.ok
    assert check_backprop((loss, backprop(False)), {"W": jnp.ones((3, 4))}, x, points=3).ok


def test_precision_float32_inside_the_backprop():
    def loss(p, b):
        return jnp.sum(jnp.sin(b @ p["w"]))

    def backprop(p, b):
        x32, c32 = b.astype(jnp.float32), jnp.cos(b @ p["w"]).astype(jnp.float32)
        return loss(p, b), {"w": x32.T @ c32}  # the sum of 2,000 terms in float32

    x = jax.random.normal(jax.random.PRNGKey(3), (2000, 4))
    report = check_backprop((loss, backprop), {"w": jnp.full(4, 0.3)}, x, points=3, rtol=1e-9)
    row = report.rows[1]
    assert not row.ok and row.cause == "precision"


# --------------------------------------------------------------------------- scale


def _mlp(bug: bool):
    def loss(p, b):
        x, y = b
        h = jnp.tanh(x @ p["W1"] + p["b1"])
        return 0.5 * jnp.mean(jnp.sum((h @ p["W2"] + p["b2"] - y) ** 2, axis=1))

    def backprop(p, b):
        x, y = b
        h = jnp.tanh(x @ p["W1"] + p["b1"])
        d = (h @ p["W2"] + p["b2"] - y) / x.shape[0]
        dz = (d @ p["W2"].T) * (1 - h**2)
        dW1 = x.T @ dz
        if bug:
            dW1 = dW1.at[17, 42].multiply(1.01)
        return loss(p, b), {"W1": dW1, "b1": dz.sum(0), "W2": h.T @ d, "b2": d.sum(0)}

    return loss, backprop


@pytest.fixture(scope="module")
def mlp_point():
    rng = np.random.default_rng(5)
    n, h = 300, 200
    params = {"W1": rng.standard_normal((n, h)) / np.sqrt(n), "b1": np.zeros(h),
              "W2": rng.standard_normal((h, 10)) / np.sqrt(h), "b2": np.zeros(10)}
    return params, (rng.standard_normal((32, n)), rng.standard_normal((32, 10)))


def test_a_62k_parameter_mlp_one_element_off_by_one_percent(mlp_point):
    good = check_backprop(_mlp(False), *mlp_point, points=1)
    assert good.ok and good.fd == "directions"
    assert default_points(1_000) == 100 and default_points(72_130) == 2  # 200,000 // size
    assert default_points(1_042_000) == 1
    bad = check_backprop(_mlp(False)[:1] + _mlp(True)[1:], *mlp_point, points=1)
    assert bad.failures == ("dL/dW1",) and bad.first_wrong == "dL/dW1"
    row = bad.rows[1]
    assert row.index == (17, 42) and row.cause == "other"
    _, hand, auto = row.worst
    assert hand == pytest.approx(1.01 * auto, rel=1e-12)
    assert "element [17, 42]" in bad.table() and len(bad.table()) < 3000


def test_report_html_and_json_name_the_first_wrong(logistic_point):
    report = check_backprop(_logistic("sign"), *logistic_point, points=3)
    page = report._repr_html_()
    assert "<table>" in page and "dL/dz" in page and "first wrong: dL/dz" in page
    d = report.to_dict()
    assert d["first_wrong"] == "dL/dz" and d["rows"][-1]["cause"] == "sign"


# --------------------------------------------------------------------------- kinks


def test_kinks_pass_with_a_note():
    report = check_derivative(jnp.abs, jnp.sign)  # x = 0 is on the default grid
    assert report.ok and "kink" in report.rows[0].note
    assert check_derivative("relu(x)", "sign(relu(x))", [-1.0, 0.0, 2.0]).ok

    def tie(p, b):
        return jnp.maximum(p["x"][0], p["x"][1])

    x = {"x": jnp.array([1.0, 1.0])}
    one_sided = check_backprop((tie, lambda p, b: (tie(p, b), {"x": jnp.array([1.0, 0.0])})),
                               x, points=1)
    assert one_sided.ok and "kink" in one_sided.rows[1].note  # autodiff says (0.5, 0.5)
    wrong = check_backprop((tie, lambda p, b: (tie(p, b), {"x": jnp.array([2.0, 0.0])})),
                           x, points=1)
    assert wrong.rows[1].cause == "kink" and not wrong.ok


def _relu_net():
    def loss(p, b):
        x, y = b
        z = gd.name(x @ p["W1"], "z")
        return jnp.mean((jax.nn.relu(z) @ p["W2"] - y) ** 2)

    def backprop(p, b):
        x, y = b
        z = x @ p["W1"]
        h = jnp.maximum(z, 0)
        d = 2 * (h @ p["W2"] - y) / y.size
        dz = (d @ p["W2"].T) * (z >= 0).astype(z.dtype)  # relu'(0) = 1: one-sided, valid
        return loss(p, b), {"W1": x.T @ dz, "W2": h.T @ d}, {"z": dz}

    return loss, backprop


def test_relu_net_at_and_near_its_kinks():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((8, 6))
    x[0] = 0.0  # example 0 sits on the kink of every unit: z[0, :] = 0 exactly
    params = {"W1": rng.standard_normal((6, 40)), "W2": rng.standard_normal((40, 2))}
    batch = (x, np.ones((8, 2)))
    # 40 kinks at point 0, and random points next to kinks: no false alarm
    report = check_backprop(_relu_net(), params, batch, points=6, fd="directions")
    assert report.ok, report.table()
    assert "kink" in next(r for r in report.rows if r.name == "dL/dz").note


# --------------------------------------------------------------------------- NumPy


def _np_pair(bug: bool):
    def loss(p, b):
        x, y = b
        return 0.5 * jnp.sum((x @ p["w"] - y) ** 2)

    def backprop(p, b):  # cs231n style: NumPy only
        x, y = np.asarray(b[0]), np.asarray(b[1])
        r = x @ np.asarray(p["w"]) - y
        assert r.dtype == np.float64  # float64 kept
        return 0.5 * float(r @ r), {"w": x.T @ r * (2.0 if bug else 1.0)}

    return loss, backprop


def test_numpy_backprop_is_checked_outside_jit():
    x = np.random.default_rng(0).standard_normal((7, 3))
    y = np.linspace(-1, 1, 7)
    good = check_backprop(_np_pair(False), {"w": np.ones(3)}, (x, y), points=4)
    assert good.ok and good.rows[1].autodiff_rel < 1e-12
    bad = check_backprop(_np_pair(True), {"w": np.ones(3)}, (x, y), points=4)
    assert bad.rows[1].cause == "factor 2" and bad.first_wrong == "dL/dw"


def test_numpy_loss_is_refused_with_what_to_change():
    def loss(p, b):
        return float(np.sum(np.asarray(p["w"]) ** 2))

    with pytest.raises(ValueError, match=r"write it with jax\.numpy"):
        check_backprop((loss, lambda p, b: (loss(p, b), {"w": 2 * p["w"]})),
                       {"w": np.ones(2)}, points=1)


def test_a_named_intermediate_without_an_adjoint_is_said():
    def loss(p, b):
        return jnp.sum(gd.name(jnp.sin(p["w"]), "s") ** 2)

    def backprop(p, b):
        s = jnp.sin(p["w"])
        return loss(p, b), {"w": 2 * s * jnp.cos(p["w"])}

    report = check_backprop((loss, backprop), {"w": jnp.arange(3.0)}, points=2)
    assert report.ok and len(report.notes) == 1
    assert "'s'" in report.notes[0] and "no adjoint dL/ds" in report.table()


# --------------------------------------------------------------------------- check_hvp


def _f(p, b):
    return p[0] ** 2 + 2 * p[0] * p[1] + p[1] ** 3  # MML example 5.15


def test_check_hvp_on_mml_example_5_15():
    """At (1, 2): H = [[2, 2], [2, 6y]] = [[2, 2], [2, 12]] (Deisenroth et al., MML 5.15)."""
    at = jnp.array([1.0, 2.0])
    right = check_hvp(_f, lambda p, b: jnp.array([[2.0, 2.0], [2.0, 6 * p[1]]]), at,
                      hessian=True, points=1)
    assert right.ok and right.rows[0].autodiff_abs == 0.0
    wrong = check_hvp(_f, lambda p, b: jnp.array([[2.0, 2.0], [2.0, 3 * p[1]]]), at,
                      hessian=True, points=1)
    assert wrong.rows[0].index == (1, 1) and wrong.rows[0].worst == (0, 6.0, 12.0)

    def hvp(p, b, v):
        return jnp.array([2 * v[0] + 2 * v[1], 2 * v[0] + 6 * p[1] * v[1]])

    assert check_hvp(_f, hvp, at).ok
    doubled = check_hvp(_f, lambda p, b, v: 2 * hvp(p, b, v), at)
    assert doubled.rows[0].cause == "factor 2" and doubled.first_wrong == doubled.rows[0].name


def test_check_hvp_sees_every_direction_not_only_the_first():
    """A slip in H's (1, 1) entry (2y for 6y) touches only H·e₂: it must fail, at every
    point, with H·e₂'s second element the worst (6·2·2 = 24 against 2·2·2 = 8, the basis
    vector scaled by max(|θ|, 1) = 2 at the given point)."""
    at = jnp.array([1.0, 2.0])
    wrong = check_hvp(_f, lambda p, b, v: jnp.array([[2.0, 2.0], [2.0, 2 * p[1]]]) @ v, at)
    assert not wrong.ok and wrong.first_wrong == "(Hv)[params]"
    assert wrong.rows[0].autodiff_fails == wrong.points
    assert wrong.rows[0].index == (1,)


def test_check_hvp_random_directions_on_a_tree():
    def loss(p, b):
        return jnp.sum(jnp.sin(p["a"]) * p["c"]) + jnp.sum(p["c"] ** 3)

    def hvp(p, b, v):
        a, c = p["a"], p["c"]
        return {"a": -jnp.sin(a) * c * v["a"] + jnp.cos(a) * v["c"],
                "c": jnp.cos(a) * v["a"] + 6 * c * v["c"]}

    params = {"a": jnp.linspace(-1, 1, 12), "c": jnp.linspace(0.5, 2, 12)}
    report = check_hvp(loss, hvp, params, points=3)
    assert report.ok and [r.name for r in report.rows] == ["(Hv)[a]", "(Hv)[c]"]

    def hvp_slip(p, b, v):  # 5c instead of 6c in c's own block: only (Hv)[c] is wrong
        good = hvp(p, b, v)
        return {"a": good["a"], "c": good["c"] - p["c"] * v["c"]}

    slip = check_hvp(loss, hvp_slip, params, points=3)
    assert [r.ok for r in slip.rows] == [True, False] and slip.first_wrong == "(Hv)[c]"
