"""Shared test helpers.

* ``x64``: a fixture that turns float64 on for one test and off afterwards.
* Strict dtype promotion for the whole suite, so an accidental float32/float64 mix
  in library code fails loudly instead of silently upcasting.
* The CLI's persistent compilation cache off (``GDJAX_NO_COMPILE_CACHE``).
* The checkout's ``benchmarks`` package and ``experiments/_harness.py`` importable (they
  sit beside ``gdjax/``, not in it), wherever the checkout is.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import jax
import pytest

jax.config.update("jax_numpy_dtype_promotion", "strict")
# commands run in-process must not switch on the CLI's persistent compilation cache for
# the rest of the suite (nor write to the user's cache directory)
os.environ["GDJAX_NO_COMPILE_CACHE"] = "1"

_ROOT = Path(__file__).resolve().parent.parent
for _folder in (_ROOT, _ROOT / "experiments"):  # `import benchmarks`, `import _harness`
    if str(_folder) not in sys.path:
        sys.path.append(str(_folder))


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield
