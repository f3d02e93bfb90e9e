"""The report of a check: one :class:`Row` per checked quantity, and :class:`Report`."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

MAX_LISTED = 20  # failing points kept per row


class Row(NamedTuple):
    """One checked quantity: a loss value, a gradient leaf, an adjoint or a derivative.

    Attributes:
      name: the quantity in the document's words, e.g. ``"dL/dw2"`` or ``"dJ/du"``.
      kind: ``"loss"``, ``"grad"``, ``"adjoint"`` or ``"derivative"``.
      status: ``"ok"``, ``"FAIL"`` or ``"UNPROBED"`` (an adjoint autodiff cannot reach:
        not a pass).
      autodiff_abs: max over points and elements of ``|hand-written − autodiff|``.
      autodiff_rel: max of ``|hand-written − autodiff| / (|autodiff| + atol/rtol)``.
      autodiff_fails: number of points where the two disagree.
      fd_abs, fd_rel: the same against central finite differences (NaN for a loss row).
      fd_error: the largest estimated error of the finite differences themselves.
      fd_fails: number of points where hand-written and finite differences disagree.
      failing_points: indices (into the report's points) where the row fails, at most 20.
      worst: ``(point, hand-written, autodiff)`` at the largest disagreement, or None.
      note: why a row could not be checked, or what is wrong with it.
    """

    name: str
    kind: str
    status: str
    autodiff_abs: float = math.nan
    autodiff_rel: float = math.nan
    autodiff_fails: int = 0
    fd_abs: float = math.nan
    fd_rel: float = math.nan
    fd_error: float = math.nan
    fd_fails: int = 0
    failing_points: tuple[int, ...] = ()
    worst: tuple[int, float, float] | None = None
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class Report(NamedTuple):
    """The result of a check: a value, with a readable :meth:`table` and :meth:`to_dict`.

    Attributes:
      subject: the model id (``"G1"``), ``"your (loss_fn, backprop_fn)"`` or ``"df/dx"``.
      title: a one-line description.
      rows: one :class:`Row` per checked quantity.
      points: how many points were checked (point 0 is the given one).
      skipped: points left out because the loss or its autodiff gradient is not finite there.
      xs: for :func:`check_derivative`, the x of each point; empty otherwise.
      rtol, atol: the tolerance against autodiff; fd_rtol: the extra one for finite
        differences (added to their estimated error).
    """

    subject: str
    title: str
    rows: tuple[Row, ...]
    points: int
    skipped: tuple[int, ...] = ()
    xs: tuple[float, ...] = ()
    rtol: float = 1e-7
    atol: float = 1e-12
    fd_rtol: float = 1e-6

    @property
    def ok(self) -> bool:
        """True when every row passed (an unprobed adjoint is not a pass)."""
        return all(row.ok for row in self.rows)

    @property
    def failures(self) -> tuple[str, ...]:
        """Names of the rows that did not pass, e.g. ``("dL/dw2",)``."""
        return tuple(row.name for row in self.rows if not row.ok)

    def _where(self, point: int) -> str:
        return f"x = {_num(self.xs[point])}" if self.xs else f"point {point}"

    def _explain(self, row: Row) -> str:
        if row.status == "UNPROBED":
            return f"UNPROBED {row.name}: not checked: {row.note}"
        usable = self.points - len(self.skipped)
        parts = []
        if row.note:
            parts.append(row.note)
        if row.autodiff_fails:
            parts.append(
                f"hand-written differs from autodiff by {_num(row.autodiff_abs)} "
                f"at {row.autodiff_fails}/{usable} points"
            )
        if row.fd_fails:
            parts.append(
                f"hand-written differs from finite differences by {_num(row.fd_abs)} "
                f"(their own error ≤ {_num(row.fd_error)}) at {row.fd_fails}/{usable} points"
            )
        text = f"FAIL {row.name}: " + "; ".join(parts)
        if self.xs and row.failing_points:
            shown = ", ".join(_num(self.xs[i]) for i in row.failing_points[:8])
            more = ", ..." if len(row.failing_points) > 8 else ""
            text += f"; wrong at x = {shown}{more}"
        if row.worst is not None and row.autodiff_fails:
            point, hand, auto = row.worst
            text += (
                f" (worst at {self._where(point)}: hand-written {hand:.10g}, autodiff {auto:.10g})"
            )
        return text

    def table(self) -> str:
        """A fixed-width table; failing rows are marked and explained below it."""
        usable = self.points - len(self.skipped)
        where = "at the given x" if self.xs else "(point 0 is the given one, the rest random)"
        lines = [
            f"{self.subject}: {self.title}",
            f"{self.points} points in float64 {where}. Hand-written = "
            f"{'your formula' if self.xs else 'the backprop written out by hand'}; "
            f"autodiff = jax.grad{'' if self.xs else ' (adjoints via zero probes)'}; "
            f"finite diff = central differences.",
            f"Tolerances: vs autodiff rtol {self.rtol:g}, atol {self.atol:g}; "
            f"vs finite diff rtol {self.fd_rtol:g} + their estimated error.",
        ]
        if self.skipped:
            lines.append(
                f"{len(self.skipped)} point(s) skipped: the loss or its autodiff gradient is "
                f"not finite there."
            )
        width = max([len(r.name) for r in self.rows] + [8])
        head = f"{'':9}{'quantity':<{width}}  {'kind':<10}"
        lines.append(
            f"{'':9}{'':<{width}}  {'':<10}{'hand-written vs autodiff':<28}"
            f"{'hand-written vs finite diff':<36}"
        )
        lines.append(
            head + f"{'max abs':>9}{'max rel':>9}{'fails':>10}"
            f"{'max abs':>9}{'max rel':>9}{'fd err':>9}{'fails':>9}"
        )
        for r in self.rows:
            mark = {"ok": "ok", "FAIL": "FAIL", "UNPROBED": "UNPROBED"}[r.status]
            if r.status == "UNPROBED":
                cells = f"{'not probed: see below':<28}"
            else:
                fd = (
                    f"{_num(r.fd_abs):>9}{_num(r.fd_rel):>9}{_num(r.fd_error):>9}"
                    f"{f'{r.fd_fails}/{usable}':>9}"
                    if not math.isnan(r.fd_abs)
                    else f"{'-':>9}{'-':>9}{'-':>9}{'-':>9}"
                )
                cells = (
                    f"{_num(r.autodiff_abs):>9}{_num(r.autodiff_rel):>9}"
                    f"{f'{r.autodiff_fails}/{usable}':>10}" + fd
                )
            lines.append(f"{mark:<9}{r.name:<{width}}  {r.kind:<10}" + cells)
        bad = [r for r in self.rows if not r.ok]
        lines += [self._explain(r) for r in bad]
        if bad:
            lines.append(f"FAILED: {', '.join(r.name for r in bad)}")
        else:
            lines.append(f"ok: every quantity agrees at all {usable} points")
        return "\n".join(line.rstrip() for line in lines)

    def __str__(self) -> str:
        return self.table()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (non-finite numbers become the strings "nan"/"inf")."""
        rows = []
        for r in self.rows:
            d = {k: _jsonable(v) for k, v in r._asdict().items()}
            d["ok"] = r.ok
            d["worst"] = (
                None
                if r.worst is None
                else dict(zip(("point", "hand_written", "autodiff"), map(_jsonable, r.worst)))
            )
            rows.append(d)
        return {
            "subject": self.subject,
            "title": self.title,
            "ok": self.ok,
            "failures": list(self.failures),
            "points": self.points,
            "skipped": list(self.skipped),
            "xs": [_jsonable(x) for x in self.xs],
            "rtol": self.rtol,
            "atol": self.atol,
            "fd_rtol": self.fd_rtol,
            "rows": rows,
        }


def _num(v: float) -> str:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return f"{v:.2g}" if abs(v) >= 1e-2 or v == 0 else f"{v:.1e}"


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, tuple):
        return [_jsonable(x) for x in v]
    return v
