r"""What Jupyter shows for gdjax results: an HTML table and a small inline SVG loss curve.

:func:`fit_result_html` is ``FitResult._repr_html_``: the run's steps, first, last and
final loss, and whether (and where) it diverged, beside the recorded losses drawn on a
log axis when they are all positive (a decade per grid line), else a linear one.
:func:`report_html` is the same kind of table for a check :class:`~gdjax.check.Report`.
Nothing here needs matplotlib or a network.
"""

from __future__ import annotations

import html
import math
from typing import Any

import numpy as np

__all__ = ["fit_result_html", "loss_curve_svg", "report_html"]

_STYLE = (
    "border-collapse:collapse;font:12px ui-monospace,Menlo,Consolas,monospace;margin-right:16px"
)
_CELL = "border:1px solid #dee2e6;padding:2px 8px;text-align:left"


def _num(x: Any) -> str:
    v = float(np.asarray(x))
    return f"{v:.6g}" if math.isfinite(v) else str(v)


def _table(rows: list[tuple[str, str]], caption: str) -> str:
    body = "".join(
        f'<tr><th style="{_CELL}">{html.escape(k)}</th>'
        f'<td style="{_CELL}">{html.escape(v)}</td></tr>'
        for k, v in rows
    )
    return (
        f'<table style="{_STYLE}"><caption style="text-align:left;font-weight:bold">'
        f"{html.escape(caption)}</caption>{body}</table>"
    )


def loss_curve_svg(losses: Any, *, width: int = 320, height: int = 140) -> str:
    """A polyline of the finite recorded losses (NaN padding left out), as inline SVG.

    The y axis is log10(loss) when every finite loss is positive, else the loss itself;
    x is the record index. Returns an empty string when fewer than two losses are finite.
    """
    y = np.asarray(losses, dtype=np.float64).ravel()
    idx = np.flatnonzero(np.isfinite(y))
    if idx.size < 2:
        return ""
    vals = y[idx]
    log = bool(np.all(vals > 0))
    v = np.log10(vals) if log else vals
    lo, hi = float(v.min()), float(v.max())
    span = hi - lo or 1.0
    pad = 24
    xs = pad + (idx - idx[0]) / max(idx[-1] - idx[0], 1) * (width - pad - 6)
    ys = 6 + (hi - v) / span * (height - 30)
    points = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(xs, ys))
    axis = "log10 loss" if log else "loss"
    top, bottom = (10**hi, 10**lo) if log else (hi, lo)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="loss curve">'
        f'<rect x="{pad}" y="6" width="{width - pad - 6}" height="{height - 30}" '
        f'fill="#f8f9fa" stroke="#dee2e6"/>'
        f'<polyline fill="none" stroke="#1c7ed6" stroke-width="1.5" points="{points}"/>'
        f'<text x="2" y="14" font-size="10">{_num(top)}</text>'
        f'<text x="2" y="{height - 26}" font-size="10">{_num(bottom)}</text>'
        f'<text x="{pad}" y="{height - 8}" font-size="10">record 0 … {int(idx[-1])} '
        f"({axis})</text></svg>"
    )


def fit_result_html(result: Any) -> str:
    """The table and loss curve Jupyter shows for a :class:`~gdjax.train.FitResult`.

    A sweep's result (fields with a leading runs axis) is summarised per run count and
    drawn from its first run.
    """
    losses = np.asarray(result.losses, dtype=np.float64)
    runs = losses.shape[0] if losses.ndim == 2 else None
    first = losses[0] if runs else losses
    finite = first[np.isfinite(first)]
    diverged = np.asarray(result.diverged)
    rows = []
    if runs:
        rows.append(("runs", str(runs)))
        rows.append(("diverged", f"{int(diverged.sum())} of {runs}"))
    else:
        at = int(np.asarray(result.diverged_at))
        rows.append(("steps", str(int(np.asarray(result.steps)))))
        rows.append(("diverged", f"yes, at step {at}" if bool(diverged) else "no"))
    rows.append(("recorded losses", str(first.size)))
    if finite.size:
        rows.append(("first loss", _num(finite[0])))
        rows.append(("last recorded", _num(finite[-1])))
    final = np.asarray(result.final_loss, dtype=np.float64)
    rows.append(("final loss", _num(final.ravel()[0]) if runs else _num(final)))
    caption = "FitResult" + (f" (sweep of {runs}; curve: run 0)" if runs else "")
    curve = loss_curve_svg(first)
    return f'<div style="display:flex;align-items:flex-start">{_table(rows, caption)}{curve}</div>'


def report_html(report: Any) -> str:
    """A check report as an HTML table: one row per checked quantity, failures in red."""
    head = "".join(
        f'<th style="{_CELL}">{h}</th>'
        for h in ("", "quantity", "kind", "max abs vs autodiff", "cause")
    )
    body = []
    for row in getattr(report, "rows", ()):
        ok = bool(getattr(row, "ok", False))
        colour = "#2f9e44" if ok else "#e03131"
        cause = getattr(row, "cause", None) or getattr(row, "note", "") or ""
        inherits = getattr(row, "inherits", None)
        if inherits:
            cause = f"inherits {inherits}" + (f"; {cause}" if cause else "")
        mark = "ok" if ok else str(getattr(row, "status", "FAIL"))
        cells = (
            mark,
            row.name,
            getattr(row, "kind", ""),
            _num(getattr(row, "autodiff_abs", math.nan)),
            cause,
        )
        body.append(
            "<tr>"
            + "".join(
                f'<td style="{_CELL};color:{colour if i == 0 else "inherit"}">'
                f"{html.escape(str(c))}</td>"
                for i, c in enumerate(cells)
            )
            + "</tr>"
        )
    title = f"{getattr(report, 'subject', '')}: {getattr(report, 'title', '')}"
    verdict = "ok" if getattr(report, "ok", False) else "FAILED"
    first = getattr(report, "first_wrong", None)
    if first:
        verdict += f"; first wrong step: {first}"
    return (
        f'<table style="{_STYLE}"><caption style="text-align:left;font-weight:bold">'
        f"{html.escape(title)} — {html.escape(verdict)}</caption><tr>{head}</tr>"
        + "".join(body)
        + "</table>"
    )
