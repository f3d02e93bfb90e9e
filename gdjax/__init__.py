"""gdjax: gradient descent done right, in JAX.

>>> import gdjax as gd
>>> model = gd.models.get("G3")
>>> report = gd.check_backprop(model)            # hand-written backprop vs autodiff
>>> result = gd.fit(model.loss, params, gd.optim.adam(1e-2), data, steps=1000)

Submodules load on first use, so ``import gdjax`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from gdjax.naming import name

__version__ = "0.1.0"

# public name -> (module, attribute or None for the module itself)
_LAZY: dict[str, tuple[str, str | None]] = {
    "models": ("gdjax.models", None),
    "losses": ("gdjax.losses", None),
    "optim": ("gdjax.optim", None),
    "data": ("gdjax.data", None),
    "plot": ("gdjax.plot", None),
    "checkpoint": ("gdjax.checkpoint", None),
    "train": ("gdjax.train", None),
    "blocked": ("gdjax.blocked", None),
    "graph": ("gdjax.graph", None),
    "diagnostics": ("gdjax.diagnostics", None),
    "lr_find": ("gdjax.diagnostics", "lr_find"),
    "sharpness": ("gdjax.diagnostics", "sharpness"),
    "distributed": ("gdjax.distributed", None),
    "Backprop": ("gdjax.models._base", "Backprop"),
    "Model": ("gdjax.models._base", "Model"),
    "check_backprop": ("gdjax.check", "check_backprop"),
    "check_derivative": ("gdjax.check", "check_derivative"),
    "check_hvp": ("gdjax.check", "check_hvp"),
    "Report": ("gdjax.check", "Report"),
    "fit": ("gdjax.train", "fit"),
    "sweep": ("gdjax.train", "sweep"),
    "FitResult": ("gdjax.train", "FitResult"),
    "SweepResult": ("gdjax.train", "SweepResult"),
    "DivergenceError": ("gdjax.train", "DivergenceError"),
    "UsageError": ("gdjax._validate", "UsageError"),
    "trace": ("gdjax.graph", "trace"),
    "Graph": ("gdjax.graph", "Graph"),
}

__all__ = ["__version__", "name", *_LAZY]


def __getattr__(attr: str) -> Any:
    if attr in _LAZY:
        module_name, member = _LAZY[attr]
        module = importlib.import_module(module_name)
        value = module if member is None else getattr(module, member)
        globals()[attr] = value
        return value
    raise AttributeError(f"module 'gdjax' has no attribute {attr!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # for type checkers and IDEs: the eager view of the lazy names
    from gdjax import blocked, checkpoint, data, graph, losses, models, optim, plot, train
    from gdjax._validate import UsageError
    from gdjax.check import Report, check_backprop, check_derivative
    from gdjax.graph import Graph, trace
    from gdjax.models._base import Backprop, Model
    from gdjax.train import DivergenceError, FitResult, SweepResult, fit, sweep
