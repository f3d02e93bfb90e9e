"""What every benchmark section shares: interleaved timing, the :class:`Row` of a
comparison, quiet output, and the optional gdjax functions a section may lack."""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np

__all__ = [
    "Row",
    "cost_row",
    "fit_or_none",
    "fmt_time",
    "median",
    "quiet",
    "ready",
    "speedup_row",
    "sweep_or_none",
    "time_side_by_side",
    "timed",
]


def ready(out: Any) -> Any:
    return jax.block_until_ready(out)


def time_side_by_side(
    fns: Mapping[str, Callable[[], Any]], *, repeats: int, warmup: int = 1, number: int = 1
) -> dict[str, list[float]]:
    """Wall seconds per call of each zero-argument ``fn``, run in interleaved rounds.

    Each function is called ``warmup`` times first (compilation, caches), then ``repeats``
    rounds call every function in turn (in reverse order every other round, so none
    always runs first), ``number`` times back to back (as ``timeit`` does, for calls too
    short to time one by one), up to ``block_until_ready`` of the last result.

    Returns:
      ``{name: [seconds per call in round 1, ..., in round repeats]}``.
    """
    for fn in fns.values():
        for _ in range(warmup):
            ready(fn())
    times: dict[str, list[float]] = {k: [] for k in fns}
    order = list(fns.items())
    for r in range(repeats):
        for k, fn in order if r % 2 == 0 else order[::-1]:
            t0 = time.perf_counter()
            for _ in range(number - 1):
                fn()
            ready(fn())
            times[k].append((time.perf_counter() - t0) / number)
    return times


def timed(fn: Callable[[], Any]) -> float:
    """Wall seconds of one call of ``fn``, up to ``block_until_ready`` of its result."""
    t0 = time.perf_counter()
    ready(fn())
    return time.perf_counter() - t0


def median(xs: Sequence[float]) -> float:
    return float(np.median(np.asarray(xs)))


class Row(NamedTuple):
    """One measured comparison: ``ratio = t_candidate / t_baseline`` or its inverse.

    Attributes:
      section: ``"fit"``, ``"sweep"``, ``"pass"`` or ``"backprop"``.
      name: what is compared, e.g. ``"N1 fit vs loop (float history)"``.
      candidate, baseline: the two things timed.
      t_candidate, t_baseline: their median seconds (per step, per call or per run, as
        ``unit`` says).
      unit: what one time covers (``"step"``, ``"call"``, ``"run"``).
      ratio: ``t_candidate / t_baseline`` for a ``≤`` goal (a cost), or
        ``t_baseline / t_candidate`` for a ``≥`` goal (a speed-up).
      goal: ``"<= 1.3"``, ``">= 100"`` or ``""`` (a row for context only).
      note: anything a reader needs to read the row.
    """

    section: str
    name: str
    candidate: str
    baseline: str
    t_candidate: float
    t_baseline: float
    unit: str
    ratio: float
    goal: str = ""
    note: str = ""

    @property
    def met(self) -> bool | None:
        """Whether the ratio meets the goal (``None`` for rows without one)."""
        if not self.goal:
            return None
        op, value = self.goal.split()
        return self.ratio <= float(value) if op == "<=" else self.ratio >= float(value)

    def to_dict(self) -> dict[str, Any]:
        return {**self._asdict(), "met": self.met}


def cost_row(section: str, name: str, cand: str, base: str, tc: float, tb: float, **kw) -> Row:
    return Row(section, name, cand, base, tc, tb, ratio=tc / tb, **kw)


def speedup_row(section: str, name: str, cand: str, base: str, tc: float, tb: float, **kw) -> Row:
    return Row(section, name, cand, base, tc, tb, ratio=tb / tc, **kw)


def fmt_time(seconds: float) -> str:
    for scale, unit in ((1.0, "s"), (1e-3, "ms"), (1e-6, "µs")):
        if abs(seconds) >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


@contextlib.contextmanager
def quiet() -> Iterator[io.StringIO]:
    """Send stdout and stderr (progress bars) to a buffer, so terminal I/O costs nothing."""
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        yield sink


def fit_or_none() -> Callable | None:
    try:
        from gdjax.train import fit
    except ImportError:
        return None
    return fit


def sweep_or_none() -> Callable | None:
    try:
        from gdjax.train import sweep
    except ImportError:
        return None
    return sweep
