r"""The comparisons of a check, in NumPy, after the compiled program has run.

From the six evaluations :math:`\phi(\pm t), \phi(\pm 2t), \phi(\pm t/16)` of the loss along
a direction (or an element) and :math:`\phi(0) = L`:

* central differences :math:`D_t = (\phi(t) - \phi(-t))/2t` and :math:`D_{t/16}`, with the
  error estimates :math:`|D_t - D_{2t}| + 4\varepsilon(|\phi(t)| + |\phi(-t)|)/t` and
  :math:`|D_t - D_{2t}|/64` plus the round-off of the smaller step;
* one-sided differences :math:`D_\pm` at :math:`t/16` (and at :math:`t`).

A hand-written value passes when it agrees with :math:`D_t` or :math:`D_{t/16}`, or lies
between the one-sided :math:`D_-` and :math:`D_+` (a point next to a kink: the smaller
step, or one side, sees the function smooth). A *kink* at the point itself is a jump
:math:`|D_+ - D_-|` that does not shrink with the step; there, a hand-written value that
differs from autodiff passes if it lies between :math:`D_-` and :math:`D_+` (a one-sided
derivative or a subgradient).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from gdjax.check.numerics import EPS, FD_STEP, Plan, Tol
from gdjax.check.report import MAX_LISTED, Row

PHASE2_POINTS = 2  # points whose worst disagreements are differenced one by one


def phase2_cap(size: int) -> int:
    """How many of a row's worst elements are differenced one by one (directions mode):
    512 for small models, fewer for large ones (16 at 10⁶ elements)."""
    return int(min(512, max(16, 20_000_000 // max(size, 1))))


class Verdict(NamedTuple):
    d1: np.ndarray  # central difference at t
    est: np.ndarray  # its estimated error
    ok: np.ndarray  # the hand-written value agrees with finite differences
    kink: np.ndarray  # a jump in the derivative at the point itself
    inside: np.ndarray  # hand-written lies between the one-sided derivatives
    lo: np.ndarray
    hi: np.ndarray


def verdicts(evals: np.ndarray, l0: Any, t: Any, hd: np.ndarray, scale: np.ndarray,
             tol: Tol) -> Verdict:
    """Finite-difference verdicts; ``evals[..., k]`` is ``φ(STEPS[k]·t)``."""
    up1, dn1, up2, dn2, up16, dn16 = np.moveaxis(evals, -1, 0)
    t16 = t / 16
    d1 = (up1 - dn1) / (2 * t)
    d2 = (up2 - dn2) / (4 * t)
    d16 = (up16 - dn16) / (2 * t16)
    round1 = 4 * EPS * (np.abs(up1) + np.abs(dn1)) / t
    round16 = 4 * EPS * (np.abs(up16) + np.abs(dn16) + 2 * np.abs(l0)) / t16
    est1 = np.abs(d1 - d2) + round1
    est16 = np.abs(d1 - d2) / 64 + round16
    base = tol.atol + tol.fd_rtol * np.maximum(scale, np.abs(d1))
    plus16, minus16 = (up16 - l0) / t16, (l0 - dn16) / t16
    plus1, minus1 = (up1 - l0) / t, (l0 - dn1) / t
    lo, hi = np.minimum(plus16, minus16), np.maximum(plus16, minus16)
    gap16, gap1 = hi - lo, np.abs(plus1 - minus1)
    near = base + round16
    inside = (hd >= lo - near) & (hd <= hi + near)
    central = (np.abs(hd - d1) <= base + est1) | (np.abs(hd - d16) <= base + est16)
    kink = (gap16 > 0.5 * gap1) & (gap16 > 10 * (base + est16))
    ok = np.nan_to_num(central | inside, nan=False).astype(bool)
    return Verdict(d1, est1, ok, kink, inside, lo, hi)


def _ratio(diff: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``diff / scale``, with 0/0 = 0 (both sides exactly zero)."""
    return np.divide(diff, scale, out=np.zeros_like(diff), where=diff > 0)


def _max(x: np.ndarray) -> float:
    return float(np.nanmax(x)) if x.size else 0.0


def make_rows(
    plan: Plan, out: dict[str, np.ndarray], tol: Tol,
    probe: Callable[[int, np.ndarray], tuple[np.ndarray, np.ndarray, float]] | None = None,
    offsets: list[int] | None = None,
    recheck: Callable[[int], np.ndarray] | None = None,
    cap: int = 16,
) -> tuple[tuple[Row, ...], tuple[int, ...]]:
    """Compare the three sides row by row, over all points (in NumPy).

    ``probe(point, flat_index)`` takes the six steps along single elements (directions
    mode), for the worst disagreements with autodiff; ``offsets`` gives each row's start
    in the flat ``(params, probes)`` vector; ``recheck(point)`` takes all six steps along
    the random directions of a point where some direction disagreed with ``±t, ±2t``.
    """
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if plan.fd == "directions":
            out = _pad_directions(plan, out, tol, recheck)
        return _compare_rows(plan, out, tol, probe, offsets, cap)


def _pad_directions(plan, out, tol, recheck):
    """Six steps per direction: the phase-1 four, then ±t/16 where one disagreed."""
    ev = out["evals"]
    pad = np.full((*ev.shape[:-1], 6 - ev.shape[-1]), np.nan)
    out = {**out, "evals": np.concatenate([ev, pad], axis=-1)}
    if recheck is None:
        return out
    v = verdicts(out["evals"], out["L0"][:, None, None], FD_STEP, out["hd"], out["scale"], tol)
    finite = out["finite"].astype(bool)
    for p in np.flatnonzero(np.any(~v.ok, axis=(1, 2)) & finite)[:PHASE2_POINTS]:
        out["evals"][p] = recheck(int(p))
    return out


def _compare_rows(plan, out, tol, probe, offsets, cap):
    finite = out["finite"].astype(bool)
    skipped = tuple(int(i) for i in np.flatnonzero(~finite))
    index = np.flatnonzero(finite)  # row i of the arrays below is point index[i]
    l0 = out["L0"][finite]
    rows, start, fails = [], 0, []
    kinked = np.zeros(len(index), bool)
    has_loss = bool(plan.layout) and plan.layout[0][1] == "loss"
    for r, (name, kind, size) in enumerate(plan.layout):
        cut = slice(start, start + size)
        start += size
        hand, auto = out["hand"][finite, cut], out["autodiff"][finite, cut]
        diff = np.nan_to_num(np.abs(hand - auto), nan=np.inf)
        mism = ~(diff <= tol.atol + tol.rtol * np.abs(auto))
        excused = np.zeros_like(mism)
        kink_bad = np.zeros_like(mism)
        stats: dict[str, Any] = {}
        fd_fail = np.zeros(len(index), bool)
        examined, total_mism = 0, int(mism.sum())
        if kind != "loss":
            if plan.fd == "elements":
                ev = np.moveaxis(out["evals"][finite][:, :, cut], 1, -1)
                v = verdicts(ev, l0[:, None], out["step"][finite, cut], hand, np.abs(auto), tol)
                excused = mism & v.kink & v.inside
                kink_bad = mism & v.kink & ~v.inside
                fd_fail = np.any(~v.ok, axis=1)
                fd_abs = np.nan_to_num(np.abs(hand - v.d1), nan=np.inf)
                stats = _fd_stats(fd_abs, v, tol)
                examined = total_mism
            else:
                k = r - has_loss
                ev = out["evals"][finite][:, k]
                v = verdicts(ev, l0[:, None], FD_STEP, out["hd"][finite][:, k],
                             out["scale"][finite][:, k], tol)
                fd_fail = np.any(~v.ok, axis=1)
                fd_abs = np.nan_to_num(np.abs(out["hd"][finite][:, k] - v.d1), nan=np.inf)
                stats = _fd_stats(fd_abs, v, tol)
                if (total_mism and probe is not None and offsets is not None
                        and not _uniform(hand, auto, plan, r)):
                    excused, kink_bad, examined = _phase2(
                        mism, diff, hand, auto, index, offsets[k], probe, tol, cap
                    )
        unexamined = ""
        if examined < total_mism and excused.any():
            # never pass a disagreement nobody looked at: the row fails, blamed on kinks
            unexamined = (f"; the {examined} largest of {total_mism} disagreements were "
                          f"examined one by one, all at kinks; pass fd='elements' to "
                          f"examine every one")
            kink_bad |= mism & ~excused
            excused[:] = False
        bad = mism & ~excused
        ad_fail = np.any(bad, axis=1)
        failing = index[ad_fail | fd_fail]
        worst, where = None, None
        if diff.size:
            pick = np.where(bad, diff, -1.0) if bad.any() else diff
            p, e = np.unravel_index(np.argmax(pick), pick.shape)
            worst = (int(index[p]), float(hand[p, e]), float(auto[p, e]))
            shape = plan.shapes[r] if plan.shapes else (size,)
            where = tuple(int(i) for i in np.unravel_index(e, shape)) if shape else ()
        note, cause = "", None
        if excused.any():
            p, e = np.argwhere(excused)[0]
            note = (f"kink at {_at(index[p], e, plan, r)}: the hand-written "
                    f"{hand[p, e]:.6g} is a one-sided derivative or subgradient (autodiff "
                    f"{auto[p, e]:.6g}); the function is not differentiable there")
        if bad.any() and (bad <= kink_bad).all():
            cause = "kink"
            note += unexamined
        rows.append(Row(
            name, kind, "FAIL" if failing.size else "ok",
            autodiff_abs=_max(diff),
            autodiff_rel=_max(_ratio(diff, np.abs(auto) + tol.atol / tol.rtol)),
            autodiff_fails=int(ad_fail.sum()),
            failing_points=tuple(int(i) for i in failing[:MAX_LISTED]),
            worst=worst, note=note, cause=cause, index=where, **stats,
        ))
        fails.append((ad_fail, fd_fail))
        kinked |= excused.any(axis=1)
    rows = [_spare_kinked(row, ad, fd, kinked, index) for row, (ad, fd) in zip(rows, fails)]
    return tuple(rows) + plan.bad_rows, skipped


def _spare_kinked(row: Row, ad_fail, fd_fail, kinked, index) -> Row:
    """At a point with a kink, finite differences along a direction see the kink, not the
    derivative: there only the comparison with autodiff (kinks excused) counts."""
    spared = fd_fail & kinked
    if not spared.any():
        return row
    failing = index[ad_fail | (fd_fail & ~kinked)]
    note = row.note + ("; " if row.note else "") + (
        f"finite differences not counted at point(s) "
        f"{', '.join(map(str, index[spared][:5]))} (a kink there)")
    return row._replace(status="FAIL" if failing.size else "ok",
                        failing_points=tuple(int(i) for i in failing[:MAX_LISTED]),
                        fd_fails=int((fd_fail & ~kinked).sum()), note=note)


def _uniform(hand: np.ndarray, auto: np.ndarray, plan: Plan, r: int) -> bool:
    """A factor, sign or transpose everywhere: a mistake, not kinks (no need to probe)."""
    from gdjax.check.diagnosis import cause_of

    cause = cause_of(hand, auto, plan.shapes[r] if plan.shapes else (), "float64", None)
    return cause is not None and cause != "precision"


def _fd_stats(fd_abs: np.ndarray, v: Verdict, tol: Tol) -> dict[str, Any]:
    return {
        "fd_abs": _max(fd_abs),
        "fd_rel": _max(_ratio(fd_abs, np.abs(v.d1) + tol.atol / tol.fd_rtol)),
        "fd_error": _max(v.est),
        "fd_fails": int(np.any(~v.ok, axis=tuple(range(1, v.ok.ndim))).sum()),
    }


def _at(point: int, element: int, plan: Plan, r: int) -> str:
    shape = plan.shapes[r] if plan.shapes else ()
    where = f"point {point}"
    if shape:
        where += f", element [{', '.join(map(str, np.unravel_index(element, shape)))}]"
    return where


def _phase2(mism, diff, hand, auto, index, offset, probe, tol, cap):
    """Single-element differences at the worst disagreements with autodiff."""
    excused = np.zeros_like(mism)
    kink_bad = np.zeros_like(mism)
    examined = 0
    ps, es = np.nonzero(mism)
    order = np.argsort(-diff[ps, es], kind="stable")
    ps, es = ps[order], es[order]
    worst_points = list(dict.fromkeys(ps.tolist()))[:PHASE2_POINTS]
    keep = np.isin(ps, worst_points)
    ps, es = ps[keep], es[keep]
    for p in worst_points:
        sel = np.flatnonzero(ps == p)[:cap]
        evals, h, l0 = probe(int(index[p]), offset + es[sel])
        v = verdicts(evals, l0, h, hand[p, es[sel]], np.abs(auto[p, es[sel]]), tol)
        excused[p, es[sel]] = v.kink & v.inside
        kink_bad[p, es[sel]] = v.kink & ~v.inside
        examined += len(sel)
    return excused, kink_bad, examined
