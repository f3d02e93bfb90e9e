r"""The gdjax benchmark (``gdjax bench`` from a source checkout): speed claims as ratios,
each measured side by side in one process.

One module per section (``--only`` picks a subset), each a set of rows
``candidate vs baseline``:

* :mod:`.expert`: ``gd.fit`` and ``gd.sweep`` vs the expert's own ``jit(scan)`` and
  ``vmap(scan)``, and calls that must not recompile;
* :mod:`.fit`: ``gd.fit`` vs a Python loop of jitted steps;
* :mod:`.sweep`: ``gd.sweep`` vs a loop of fits;
* :mod:`.blocked_pass` (section ``pass``): a full-batch step of a linear model / one
  ``X @ w``;
* :mod:`.backprop`: hand-written backprop vs ``jax.value_and_grad``;
* :mod:`.checker`: ``gd.check_backprop`` vs ``jax.test_util.check_grads`` and
  ``torch.autograd.gradcheck`` (where torch is installed), 10³ to 10⁶ parameters;
* :mod:`.scaling`: a sweep in one process vs the same sweep in two (``jax.distributed``).

A section module defines ``NAME``, ``QUICK`` (its sizes for ``--quick``) and
``bench(**sizes) -> (rows, info)``; a new section is a new file added to
``_SECTION_MODULES``.

Method (:func:`._timing.time_side_by_side`): every timed function is compiled and run
once before timing; the candidates of a row are run in interleaved rounds (A, B, then
B, A, ...), so a slow spell of the machine hits both; each time ends with
``block_until_ready``; a row reports the median of the rounds. Absolute times depend on
the machine (and on what else runs on it); the ratios are the claims. See
docs/performance.md.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax

from gdjax._validate import UsageError

from . import backprop, blocked_pass, checker, expert, fit, scaling, sweep
from ._timing import Row, fmt_time, time_side_by_side

__all__ = [
    "QUICK",
    "SECTIONS",
    "Row",
    "format_table",
    "machine_info",
    "one_cpu_device_per_core",
    "parse_only",
    "run",
    "time_side_by_side",
]

_SECTION_MODULES = (expert, fit, sweep, blocked_pass, backprop, checker, scaling)

SECTIONS: dict[str, Callable[..., tuple[list[Row], dict[str, Any]]]] = {
    m.NAME: m.bench for m in _SECTION_MODULES
}

#: Sizes for ``--quick``: a smoke test of the harness, not a measurement.
QUICK: dict[str, dict[str, Any]] = {m.NAME: m.QUICK for m in _SECTION_MODULES}


def one_cpu_device_per_core() -> None:
    """Give the CPU backend one device per core, if JAX has not started yet.

    Then the ``pass`` section can also time the one-pass step with the rows of ``X``
    split over every core (:func:`gdjax.blocked.sharded_linear_value_and_grad`); the
    other sections run on the first device, as before. The benchmark's entry calls it
    before :func:`run`; importing this package changes no JAX setting.
    """
    try:
        jax.config.update("jax_num_cpu_devices", os.cpu_count() or 1)
    except RuntimeError:  # backends already initialised: keep what there is
        pass


def machine_info() -> dict[str, Any]:
    """Where the numbers were taken."""
    dev = jax.devices()[0]
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "device": getattr(dev, "device_kind", str(dev)),
        "device_count": jax.device_count(),
        "loadavg_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan"),
    }


def parse_only(only: str | Sequence[str] | None) -> list[str]:
    """The section names of ``--only`` (all of them for ``None``), or a UsageError."""
    if only is None:
        return list(SECTIONS)
    names = only.split(",") if isinstance(only, str) else list(only)
    names = [s.strip() for s in names if s.strip()]
    unknown = [s for s in names if s not in SECTIONS]
    if unknown or not names:
        raise UsageError(
            f"`--only` must be a comma-separated subset of {','.join(SECTIONS)}, got "
            f"{only!r}. Example: --only pass,backprop"
        )
    return names


def run(
    only: str | Sequence[str] | None = None,
    *,
    quick: bool = False,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the chosen sections and return ``{"machine", "quick", "sections", "rows"}``.

    ``sections[name]`` holds that section's info and its rows (as dicts); ``rows`` is every
    row of every section, in order.
    """
    names = parse_only(only)
    result: dict[str, Any] = {"machine": machine_info(), "quick": quick, "sections": {}}
    all_rows: list[dict[str, Any]] = []
    for name in names:
        if log is not None:
            log(f"bench {name} ...")
        t0 = time.perf_counter()
        rows, info = SECTIONS[name](**(QUICK[name] if quick else {}))
        row_dicts = [r.to_dict() for r in rows]
        result["sections"][name] = {
            **info,
            "rows": row_dicts,
            "wall_s": time.perf_counter() - t0,
        }
        all_rows.extend(row_dicts)
    result["rows"] = all_rows
    return result


def format_table(result: Mapping[str, Any]) -> str:
    """The rows as a fixed-width table, with the machine on the first line."""
    mach = result["machine"]
    head = (
        f"gdjax bench on {mach['backend']} ({mach['device']} x{mach['device_count']}, "
        f"{mach['cpu_count']} CPUs), jax {mach['jax']}, load average {mach['loadavg_1min']:.2f}"
    )
    if result["quick"]:
        head += "  [--quick: sizes too small to mean anything]"
    cols = ("comparison", "candidate", "baseline", "ratio", "goal", "met")
    lines = []
    for r in result["rows"]:
        met = "" if r["met"] is None else "yes" if r["met"] else "NO"
        lines.append(
            (
                r["name"],
                f"{fmt_time(r['t_candidate'])}/{r['unit']}",
                f"{fmt_time(r['t_baseline'])}/{r['unit']}",
                f"{r['ratio']:.3g}",
                r["goal"],
                met,
            )
        )
    widths = [
        max(len(c), *(len(line[i]) for line in lines)) if lines else len(c)
        for i, c in enumerate(cols)
    ]
    fmt = "  ".join(f"{{:{'<' if i < 1 else '>'}{w}}}" for i, w in enumerate(widths))
    out = [head, fmt.format(*cols), fmt.format(*("-" * w for w in widths))]
    out += [fmt.format(*line) for line in lines]
    for name, sec in result["sections"].items():
        if sec.get("skipped"):
            out.append(f"{name}: skipped {sec['skipped']}")
        notes = [f"  {r['name']}: {r['note']}" for r in sec["rows"] if r["note"]]
        out += notes
    return "\n".join(out)
