"""``gdjax trace MODEL``: a registry model's computation graph, with values and adjoints."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

HELP = "draw a registry model's computation graph"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL_ID")
    p.add_argument("--at", default=None, metavar="JSON", help="parameters as JSON")
    p.add_argument("--svg", default=None, metavar="FILE", help="write the graph as SVG")
    p.add_argument("--png", default=None, metavar="FILE", help="write the graph as PNG")
    p.add_argument("--dot", action="store_true", help="print Graphviz DOT instead of a table")


def run(args: argparse.Namespace) -> int:
    """``gdjax trace MODEL_ID``: the model's graph at its example point (or ``--at``)."""
    from gdjax import models
    from gdjax.graph import trace

    model = models.get(args.model)
    params, batch = model.example()
    if args.at is not None:
        params = _params_at(args.at, params)
    graph = trace(model.loss, params, batch)
    print(graph.to_dot() if args.dot else f"{model.id}: {model.title}\n\n{graph.table()}")
    for path in (args.svg, args.png):
        if path:
            print(f"wrote {graph.save(path)}")
    return 0


def _params_at(text: str, example: Any) -> Any:
    """The example parameters with the values of the JSON ``text`` put in."""
    import json

    from gdjax._validate import UsageError

    try:
        given = json.loads(text)
    except json.JSONDecodeError as err:
        raise UsageError(
            f"--at is not valid JSON ({err}). Example: --at '{{\"a\": 1.0}}'."
        ) from None
    return _merge(given, example, "--at")


def _merge(given: Any, example: Any, where: str) -> Any:
    """``example`` with the entries of ``given`` (parsed JSON) put in, checked leaf by leaf.

    Raises:
      UsageError: naming ``where`` (``--at['a']``): an unknown key, a wrong structure or
        shape, or a value that is not a number.
    """
    import jax.numpy as jnp
    import numpy as np

    from gdjax._validate import UsageError

    if isinstance(example, Mapping):
        if not isinstance(given, Mapping):
            raise UsageError(f"{where} must be a JSON object with keys {sorted(example)}.")
        unknown = sorted(set(given) - set(example))
        if unknown:
            raise UsageError(
                f"{where} has unknown key(s) {unknown}; the model's parameters are "
                f"{sorted(example)}."
            )
        return {
            k: _merge(given[k], v, f"{where}[{k!r}]") if k in given else v
            for k, v in example.items()
        }
    if isinstance(example, list | tuple):
        if not isinstance(given, list) or len(given) != len(example):
            raise UsageError(f"{where} must be a JSON list of {len(example)} entries.")
        return type(example)(
            _merge(g, e, f"{where}[{i}]") for i, (g, e) in enumerate(zip(given, example))
        )
    try:
        value = np.asarray(given, dtype=np.asarray(example).dtype)
    except (TypeError, ValueError):
        raise UsageError(f"{where} must hold numbers, got {given!r}.") from None
    if value.shape != np.shape(example):
        raise UsageError(
            f"{where} has shape {value.shape}, but the model expects {np.shape(example)}."
        )
    return jnp.asarray(value)
