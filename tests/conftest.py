"""Shared test helpers.

* ``x64``: a fixture that turns float64 on for one test and off afterwards.
* Strict dtype promotion for the whole suite, so an accidental float32/float64 mix
  in library code fails loudly instead of silently upcasting.
"""

from __future__ import annotations

import jax
import pytest

jax.config.update("jax_numpy_dtype_promotion", "strict")


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield
