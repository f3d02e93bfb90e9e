"""The report of a check: one :class:`Row` per checked quantity, and :class:`Report`.

The report stays readable at any size: one row per leaf or named adjoint, with the worst
element's index and values, never an array.
"""

from __future__ import annotations

import html
import math
from typing import Any, NamedTuple

MAX_LISTED = 20  # failing points kept per row


class Row(NamedTuple):
    """One checked quantity: a loss value, a gradient leaf, an adjoint or a derivative.

    Attributes:
      name: the quantity in the document's words, e.g. ``"dL/dw2"`` or ``"dJ/du"``.
      kind: ``"loss"``, ``"grad"``, ``"adjoint"``, ``"derivative"`` or ``"hvp"``.
      status: ``"ok"``, ``"FAIL"`` or ``"UNPROBED"`` (an adjoint autodiff cannot reach:
        not a pass).
      autodiff_abs: max over points and elements of ``|hand-written − autodiff|``.
      autodiff_rel: max of ``|hand-written − autodiff| / (|autodiff| + atol/rtol)``.
      autodiff_fails: number of points where the two disagree (kinks excused).
      fd_abs, fd_rel: the same against central finite differences (element by element,
        or along random directions: ``|hand·d − D_d|``); NaN for a loss row.
      fd_error: the largest estimated error of the finite differences themselves.
      fd_fails: number of points where hand-written and finite differences disagree.
      failing_points: indices (into the report's points) where the row fails, at most 20.
      worst: ``(point, hand-written, autodiff)`` at the largest disagreement, or None.
      note: why a row could not be checked, what is wrong with it, or a kink it passed.
      cause: None when ok; else why it is wrong: ``"factor 2"``, ``"factor 50 = m: sum
        instead of mean?"``, ``"sign"``, ``"transpose"``, ``"missing branch: ..."``,
        ``"kink"``, ``"precision"`` or ``"other"``.
      inherits: the name of the wrong row whose error this row only inherits (its own
        step of the chain rule is right), or None.
      index: the index of the worst element inside the quantity, e.g. ``(3, 7)``.
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
    cause: str | None = None
    inherits: str | None = None
    index: tuple[int, ...] | None = None

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
      first_wrong: the name of the first wrong quantity along the backward pass (a wrong
        row whose error is its own, not inherited), or None when every row is right.
      notes: what the table should say besides the rows (e.g. a named intermediate whose
        adjoint the backprop does not return).
      fd: how finite differences were taken: ``"elements"`` or ``"directions"``.
    """

    subject: str
    title: str
    rows: tuple[Row, ...]
    points: int
    skipped: tuple[int, ...] = ()
    xs: tuple[Any, ...] = ()
    rtol: float = 1e-7
    atol: float = 1e-12
    fd_rtol: float = 1e-6
    first_wrong: str | None = None
    notes: tuple[str, ...] = ()
    fd: str = "elements"

    @property
    def ok(self) -> bool:
        """True when every row passed (an unprobed adjoint is not a pass)."""
        return all(row.ok for row in self.rows)

    @property
    def failures(self) -> tuple[str, ...]:
        """Names of the rows that did not pass, e.g. ``("dL/dw2",)``."""
        return tuple(row.name for row in self.rows if not row.ok)

    def _where(self, point: int) -> str:
        if self.xs:
            x = self.xs[point]
            return "x = " + (_num(x) if isinstance(x, float) else f"({_vec(x)})")
        return f"point {point}"

    def _explain(self, row: Row) -> str:
        if row.status == "UNPROBED":
            return f"UNPROBED {row.name}: not checked: {row.note}"
        usable = self.points - len(self.skipped)
        parts = []
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
        if row.note:
            parts.append(row.note)
        if row.cause:
            parts.append(f"cause: {row.cause}")
        if row.inherits:
            parts.append(f"only inherits the error of {row.inherits}")
        text = f"FAIL {row.name}: " + "; ".join(parts)
        if self.xs and row.failing_points:
            shown = ", ".join(self._where(i)[4:] for i in row.failing_points[:8])
            more = ", ..." if len(row.failing_points) > 8 else ""
            text += f"; wrong at x = {shown}{more}"
        if row.worst is not None and row.autodiff_fails:
            point, hand, auto = row.worst
            at = "" if not row.index else f", element [{', '.join(map(str, row.index))}]"
            text += (
                f" (worst at {self._where(point)}{at}: hand-written {hand:.10g}, "
                f"autodiff {auto:.10g})"
            )
        return text

    def _inherit_lines(self) -> list[str]:
        by_root: dict[str, list[str]] = {}
        for r in self.rows:
            if r.inherits:
                by_root.setdefault(r.inherits, []).append(r.name)
        lines = []
        for root, names in by_root.items():
            verb = "inherits" if len(names) == 1 else "inherit"
            lines.append(f"{', '.join(names)} {verb} the error of {root}")
        return lines

    def table(self) -> str:
        """A fixed-width table; failing rows are marked and explained below it."""
        usable = self.points - len(self.skipped)
        where = "at the given x" if self.xs else "(point 0 is the given one, the rest random)"
        fd = (
            "central differences"
            if self.fd == "elements"
            else "central differences along random directions per quantity"
        )
        lines = [
            f"{self.subject}: {self.title}",
            f"{self.points} points in float64 {where}. Hand-written = "
            f"{'your formula' if self.xs else 'the backprop written out by hand'}; "
            f"autodiff = jax.grad{'' if self.xs else ' (adjoints via zero probes)'}; "
            f"finite diff = {fd}.",
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
            f"{'max abs':>9}{'max rel':>9}{'fd err':>9}{'fails':>9}  cause"
        )
        for r in self.rows:
            if r.status == "UNPROBED":
                cells = f"{'not probed: see below':<28}"
            else:
                fd_cells = (
                    f"{_num(r.fd_abs):>9}{_num(r.fd_rel):>9}{_num(r.fd_error):>9}"
                    f"{f'{r.fd_fails}/{usable}':>9}"
                    if not math.isnan(r.fd_abs)
                    else f"{'-':>9}{'-':>9}{'-':>9}{'-':>9}"
                )
                cells = (
                    f"{_num(r.autodiff_abs):>9}{_num(r.autodiff_rel):>9}"
                    f"{f'{r.autodiff_fails}/{usable}':>10}" + fd_cells
                )
                why = f"inherits {r.inherits}" if r.inherits else (r.cause or "")
                cells += f"  {why}" if why else ""
            lines.append(f"{r.status:<9}{r.name:<{width}}  {r.kind:<10}" + cells)
        bad = [r for r in self.rows if not r.ok]
        lines += [self._explain(r) for r in bad]
        lines += [f"note {r.name}: {r.note}" for r in self.rows if r.ok and r.note]
        lines += [f"note: {n}" for n in self.notes]
        if bad:
            if self.first_wrong:
                lines.append(f"first wrong along the backward pass: {self.first_wrong}")
            lines += self._inherit_lines()
            lines.append(f"FAILED: {', '.join(r.name for r in bad)}")
        else:
            lines.append(f"ok: every quantity agrees at all {usable} points")
        return "\n".join(line.rstrip() for line in lines)

    def __str__(self) -> str:
        return self.table()

    def _repr_html_(self) -> str:
        """An HTML table for notebooks: one row per quantity, failing rows in red."""
        usable = self.points - len(self.skipped)
        cols = ("status", "quantity", "kind", "max abs (ad)", "max rel (ad)", "fails (ad)",
                "max abs (fd)", "fd err", "fails (fd)", "worst", "cause")
        out = [
            f"<div><b>{html.escape(self.subject)}</b>: {html.escape(self.title)}<br>"
            f"{self.points} points in float64; finite differences by {self.fd}.</div>",
            "<table><thead><tr>" + "".join(f"<th>{c}</th>" for c in cols) + "</tr></thead>",
            "<tbody>",
        ]
        for r in self.rows:
            style = "" if r.ok else ' style="color:#b00020;font-weight:bold"'
            worst = ""
            if r.worst is not None and not r.ok:
                at = f"[{', '.join(map(str, r.index))}]" if r.index else ""
                worst = f"{self._where(r.worst[0])} {at}: {r.worst[1]:.6g} vs {r.worst[2]:.6g}"
            why = f"inherits {r.inherits}" if r.inherits else (r.cause or r.note)
            cells = (r.status, r.name, r.kind, _num(r.autodiff_abs), _num(r.autodiff_rel),
                     f"{r.autodiff_fails}/{usable}", _num(r.fd_abs), _num(r.fd_error),
                     f"{r.fd_fails}/{usable}", worst, why or "")
            out.append(
                f"<tr{style}>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells)
                + "</tr>"
            )
        out.append("</tbody></table>")
        verdict = (
            f"FAILED: {', '.join(self.failures)}; first wrong: {self.first_wrong}"
            if not self.ok
            else f"ok: every quantity agrees at all {usable} points"
        )
        notes = "".join(f"<br>note: {html.escape(n)}" for n in self.notes)
        out.append(f"<div>{html.escape(verdict)}{notes}</div>")
        return "\n".join(out)

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
            "first_wrong": self.first_wrong,
            "points": self.points,
            "skipped": list(self.skipped),
            "xs": [_jsonable(x) for x in self.xs],
            "rtol": self.rtol,
            "atol": self.atol,
            "fd_rtol": self.fd_rtol,
            "fd": self.fd,
            "notes": list(self.notes),
            "rows": rows,
        }


def _num(v: float) -> str:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return f"{v:.2g}" if abs(v) >= 1e-2 or v == 0 else f"{v:.1e}"


def _vec(x: Any) -> str:
    return ", ".join(_num(float(v)) for v in x)


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, tuple):
        return [_jsonable(x) for x in v]
    return v
