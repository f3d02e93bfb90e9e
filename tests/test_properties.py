"""Property-based tests (hypothesis) and pytree assertions (chex).

* The formula parser against an independent NumPy evaluator of the same expression tree.
* Stable cross-entropy against its closed form on the whole range |z| ≤ 1e4.
* Every model's gradients have exactly its parameters' pytree, shapes and dtypes.
"""

from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import gdjax as gd
from gdjax._expr import parse
from gdjax.losses import bce_with_logits

# An expression tree is (text, numpy function of x); the leaves are x and small constants.
_UNARY = {  # name -> (template, NumPy reference); exp gets a bounded argument
    "sin": ("sin({})", np.sin),
    "cos": ("cos({})", np.cos),
    "tanh": ("tanh({})", np.tanh),
    "exp": ("exp(tanh({}))", lambda v: np.exp(np.tanh(v))),
    "sigmoid": ("sigmoid({})", lambda v: 1 / (1 + np.exp(-v))),
}
_BINARY = {"+": np.add, "-": np.subtract, "*": np.multiply}
_leaf = st.one_of(
    st.just(("x", lambda x: x)),
    st.integers(1, 5).map(lambda c: (str(c), lambda x, c=c: np.full_like(x, c))),
)


def _unary(name, child):
    template, f = _UNARY[name]
    return template.format(child[0]), lambda x: f(child[1](x))


def _binary(op, left, right):
    return f"({left[0]} {op} {right[0]})", lambda x: _BINARY[op](left[1](x), right[1](x))


def _extend(children):
    return st.one_of(
        st.builds(_unary, st.sampled_from(sorted(_UNARY)), children),
        st.builds(_binary, st.sampled_from(sorted(_BINARY)), children, children),
    )


_expressions = st.recursive(_leaf, _extend, max_leaves=6)


@settings(max_examples=40, deadline=None)
@given(expr=_expressions, x=st.floats(-2.0, 2.0))
def test_parser_agrees_with_an_independent_evaluator(expr, x):
    text, reference = expr
    with jax.enable_x64(True):
        got = float(parse(text)(jnp.float64(x)))
    want = float(reference(np.float64(x)))
    assert math.isclose(got, want, rel_tol=1e-12, abs_tol=1e-12), text


@settings(max_examples=60, deadline=None)
@given(z=st.floats(-1e4, 1e4), y=st.floats(0.0, 1.0))
def test_bce_with_logits_matches_softplus_form(z, y):
    with jax.enable_x64(True):
        loss, grad = jax.value_and_grad(bce_with_logits)(jnp.float64(z), jnp.float64(y))
    # closed forms: L = softplus(z) − y·z = log(1 + e^z) − y·z, dL/dz = σ(z) − y
    assert math.isclose(float(loss), np.logaddexp(0.0, z) - y * z, rel_tol=1e-9, abs_tol=1e-12)
    assert math.isclose(float(grad), 0.5 * (1 + math.tanh(z / 2)) - y, abs_tol=1e-12)


def test_every_model_grads_have_the_params_pytree():
    for model in gd.models.REGISTRY.values():
        params, batch = model.example()
        bp = model.backprop(params, batch)
        chex.assert_trees_all_equal_shapes_and_dtypes(bp.grads, params)
        chex.assert_shape(bp.loss, ())
        assert set(bp.adjoints) == set(model.adjoint_names), model.id
