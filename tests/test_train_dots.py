"""gdjax.train.dots: small matrix products written as multiply-adds (the CPU engine's)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gdjax as gd
from gdjax.train import dots

KEY = jax.random.key(7)


def normal(i, shape):
    return jax.random.normal(jax.random.fold_in(KEY, i), shape)


@pytest.mark.parametrize(
    "spec, lhs, rhs",
    [
        ("ij,j->i", (2, 2), (2,)),  # N1's layers
        ("ij,jk->ik", (40, 4), (4, 6)),
        ("i,i->", (3,), (3,)),
        ("ij,kj->ik", (5, 3), (7, 3)),  # contracted on both minor axes
        ("bij,bjk->bik", (8, 2, 3), (8, 3, 4)),  # a batch axis
        ("i,j->ij", (4,), (5,)),  # nothing contracted: an outer product
    ],
)
def test_written_out_products_equal_dot_general_to_an_ulp(spec, lhs, rhs):
    a, b = normal(0, lhs), normal(1, rhs)

    def f(a, b):
        return jnp.einsum(spec, a, b)

    got = jax.jit(dots.small_dots(f, 4))(a, b)
    want = np.einsum(spec, np.asarray(a, np.float64), np.asarray(b, np.float64))
    assert got.shape == want.shape and got.dtype == jnp.float32
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    text = jax.jit(dots.small_dots(f, 4)).lower(a, b).as_text()
    assert "dot_general" not in text  # written out
    assert "dot_general" in jax.jit(f).lower(a, b).as_text()


def test_larger_products_and_integer_products_are_left_as_they_are():
    a, b = normal(0, (3, 5)), normal(1, (5, 2))  # contracts 5 > 4

    def f(a, b):
        return a @ b

    assert "dot_general" in jax.jit(dots.small_dots(f, 4)).lower(a, b).as_text()
    ints = jnp.arange(4).reshape(2, 2)
    text = jax.jit(dots.small_dots(f, 4)).lower(ints, ints).as_text()
    assert "dot_general" in text
    assert dots.small_dots(f, 0) is f  # 0: no rewrite at all


def test_products_inside_jitted_functions_and_gradients_are_written_out():
    @jax.jit
    def layer(w, x):
        return jnp.tanh(w @ x)

    def loss(w, x):
        return jnp.sum(layer(w, x) ** 2)

    w, x = normal(0, (2, 2)), normal(1, (2,))
    grad = dots.small_dots(jax.grad(loss), 4)
    text = jax.jit(grad).lower(w, x).as_text()
    assert "dot_general" not in text
    with jax.enable_x64():  # the gradient itself, against float64 autodiff
        want = jax.grad(loss)(np.asarray(w, np.float64), np.asarray(x, np.float64))
    np.testing.assert_allclose(jax.jit(grad)(w, x), want, rtol=1e-5, atol=1e-6)


def test_a_vmapped_rewrite_batches_the_written_out_products():
    w, x = normal(0, (64, 2, 2)), normal(1, (64, 2))

    def f(w, x):
        return w @ x

    got = jax.jit(jax.vmap(dots.small_dots(f, 4)))(w, x)
    np.testing.assert_allclose(got, np.einsum("rij,rj->ri", w, x), rtol=1e-6, atol=1e-6)


def test_the_limit_is_part_of_the_programs_key(monkeypatch):
    n1 = gd.models.get("N1")
    params, batch = n1.example()

    def fresh(p, b):  # a loss of its own: nothing compiled for it yet
        return n1.loss(p, b)

    before = gd.train.compilations()
    a = gd.fit(fresh, params, gd.optim.sgd(0.5), batch, steps=200)
    monkeypatch.setattr(dots, "MAX_CONTRACTION", 0)
    b = gd.fit(fresh, params, gd.optim.sgd(0.5), batch, steps=200)
    assert gd.train.compilations() == before + 2  # the exact program is a program of its own
    np.testing.assert_allclose(a.losses, b.losses, rtol=1e-5)
    assert not np.array_equal(a.losses, b.losses) or jax.default_backend() != "cpu"
