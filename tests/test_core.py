"""The small shared pieces: names and probes, input validation, losses, the registry."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gdjax as gd
from gdjax._validate import check_finite, check_in_range, check_positive, check_same_structure
from gdjax.losses import bce_with_logits, half_squared_error, mean_squared_error, squared_error
from gdjax.naming import probing


def test_name_is_identity_and_probe_gives_adjoint():
    def f(x):
        u = gd.name(jnp.sin(x), "u")
        return u * u  # dJ/du = 2u

    x = jnp.float32(0.7)
    assert f(x) == pytest.approx(np.sin(0.7) ** 2, rel=1e-6)

    def with_probe(p):
        with probing({"u": p}):
            return f(x)

    np.testing.assert_allclose(jax.grad(with_probe)(jnp.float32(0.0)), 2 * np.sin(0.7), rtol=1e-6)


def test_name_works_under_jit_vmap_grad():
    def f(x):
        return gd.name(x * x, "sq").sum()

    xs = jnp.arange(3.0)
    np.testing.assert_allclose(jax.jit(jax.vmap(jax.grad(f)))(xs[:, None]), 2 * xs[:, None])


def test_name_rejects_bad_label():
    with pytest.raises(TypeError, match="label"):
        gd.name(jnp.ones(2), "")


@pytest.mark.parametrize("z", [1e4, -1e4])
@pytest.mark.parametrize("y", [0.0, 1.0])
def test_bce_with_logits_is_finite_at_extremes(z, y):
    z, y = jnp.float32(z), jnp.float32(y)
    loss, grad = jax.value_and_grad(bce_with_logits)(z, y)
    assert np.isfinite(loss) and np.isfinite(grad)
    # closed form: loss = softplus(z) - y*z, gradient = sigmoid(z) - y
    np.testing.assert_allclose(loss, np.logaddexp(0.0, float(z)) - float(y) * float(z), rtol=1e-6)
    np.testing.assert_allclose(grad, (1.0 if z > 0 else 0.0) - float(y), atol=1e-7)


def test_bce_matches_probability_form_at_moderate_logits(x64):
    z = jnp.linspace(-5.0, 5.0, 11)
    y = jnp.linspace(0.0, 1.0, 11)
    a = 1 / (1 + jnp.exp(-z))
    np.testing.assert_allclose(
        bce_with_logits(z, y), -(y * jnp.log(a) + (1 - y) * jnp.log(1 - a)), rtol=1e-12
    )


def test_sigmoid_is_finite_at_extremes():
    z = jnp.array([-1e4, 1e4], jnp.float32)
    np.testing.assert_array_equal(gd.losses.sigmoid(z), [0.0, 1.0])
    assert np.all(np.isfinite(jax.vmap(jax.grad(gd.losses.sigmoid))(z)))


def test_squared_errors_closed_forms():
    p, y = jnp.array([1.0, 2.0, 4.0]), jnp.array([0.0, 2.0, 1.0])
    assert squared_error(p, y) == pytest.approx(10.0)
    assert mean_squared_error(p, y) == pytest.approx(10.0 / 3)
    assert half_squared_error(p, y) == pytest.approx(5.0)


def test_validation_messages_name_the_argument():
    with pytest.raises(ValueError, match=r"`data\[0\]` holds 1 non-finite"):
        check_finite("data", (jnp.array([1.0, jnp.nan]),))
    with pytest.raises(ValueError, match="`learning_rate` must be a positive"):
        check_positive("learning_rate", -0.1)
    with pytest.raises(ValueError, match="`learning_rate` must be a positive"):
        check_positive("learning_rate", float("nan"))
    with pytest.raises(TypeError, match="`learning_rate` must be a number"):
        check_positive("learning_rate", "fast")
    with pytest.raises(ValueError, match=r"`b1` must lie in \[0, 1\)"):
        check_in_range("b1", 1.0, 0, 1)
    with pytest.raises(ValueError, match="same structure"):
        check_same_structure("grads", {"w": 1.0}, {"w": 1.0, "b": 0.0}, "params")
    with pytest.raises(ValueError, match=r"`grads\['w'\]` has shape \(2,\)"):
        check_same_structure("grads", {"w": jnp.ones(2)}, {"w": jnp.ones(3)}, "params")


def test_validation_lets_tracers_through():
    jax.jit(lambda lr: check_positive("learning_rate", lr) or lr)(-1.0)
    jax.jit(lambda x: check_finite("data", x) or x)(jnp.array([jnp.nan]))


def test_unknown_model_id_is_a_clear_error():
    with pytest.raises(ValueError, match=r"Unknown model id 'G9'.*G1"):
        gd.models.get("G9")
    assert gd.models.get("g1") is gd.models.REGISTRY["G1"]


def test_g1_layout_errors():
    m = gd.models.get("G1")
    with pytest.raises(ValueError, match="Missing: \\['c'\\]"):
        m.loss({"a": 1.0, "b": 2.0}, None)
    with pytest.raises(ValueError, match=r"params\['a'\] has shape \(2,\)"):
        m.loss({"a": jnp.ones(2), "b": 2.0, "c": 1.0}, None)
    with pytest.raises(TypeError, match="must be a dict"):
        m.loss([1.0, 2.0, 3.0], None)


def test_public_api_is_lazy_and_small():
    assert "fit" in dir(gd) and "check_backprop" in dir(gd)
    with pytest.raises(AttributeError):
        gd.does_not_exist  # noqa: B018
