"""Plots for training runs: loss curves, loss landscapes with trajectories, sweeps.

Every function draws one titled figure with labelled axes and a legend, writes it as a
PNG to ``path`` (parent folders are created) and returns the path. Figures are built
with :class:`matplotlib.figure.Figure` directly, never ``pyplot``, so plotting leaves the
global backend and any open figures alone (safe in scripts, servers and notebooks).
``pip install gdjax[plot]`` installs matplotlib.

>>> import gdjax as gd
>>> gd.plot.loss_curves({"GD": result.losses}, "runs/demo/loss.png", title="G3")
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["grid", "landscape", "lines", "loss_curves", "lr_sweep", "panels", "side_by_side"]

# colour-blind-safe cycle (Okabe & Ito), in a fixed order so that a name keeps its colour
COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
_DPI = 130


def _figure(figsize: tuple[float, float] = (7.0, 4.5), ncols: int = 1) -> tuple[Any, list[Any]]:
    try:
        from matplotlib.figure import Figure
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(
            "gdjax.plot draws with matplotlib, which is not installed. "
            "Install it with: pip install 'gdjax[plot]'",
            name="matplotlib",
        ) from err
    fig = Figure(figsize=figsize, layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    for ax in axes:
        ax.grid(True, alpha=0.3)
    return fig, list(axes)


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        from gdjax._validate import UsageError

        raise UsageError(f"`path` {str(path)!r} is a folder; give a file name, e.g. loss.png.")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=_DPI)
    return path


def _finite(y: Any) -> np.ndarray:
    y = np.asarray(y, dtype=np.float64)
    return np.where(np.isfinite(y), y, np.nan)


def _xy(curve: Any) -> tuple[np.ndarray, np.ndarray]:
    """A curve is ``y`` (plotted against 0, 1, …) or a pair ``(x, y)``."""
    if isinstance(curve, tuple) and len(curve) == 2:
        return np.asarray(curve[0], dtype=np.float64), _finite(curve[1])
    y = _finite(curve)
    return np.arange(y.size, dtype=np.float64), y


def loss_curves(
    curves: Mapping[str, Any],
    path: str | Path,
    *,
    title: str,
    xlabel: str = "step",
    ylabel: str = "loss",
    log: bool = True,
    reference: float | None = None,
    reference_label: str = "reference optimum",
    styles: Mapping[str, str] | None = None,
    legend_loc: str = "best",
) -> Path:
    """Loss against step, one line per entry of ``curves`` (``label -> y`` or ``(x, y)``).

    Args:
      log: a log-scale loss axis. With a ``reference`` the axis shows ``loss − reference``
        (the suboptimality, which is what converges), labelled so.
      reference: the optimum found by an independent solver, drawn as a dashed line (or,
        on a log axis, subtracted; gaps below float32's resolution of the loss,
        ``eps·|reference|``, are rounding noise and drawn at that floor).
      styles: ``label -> line style`` (e.g. ``"--"`` for a curve drawn over another).
      legend_loc: where the legend goes (matplotlib's ``loc``, e.g. ``"upper right"``).
    """
    fig, (ax,) = _figure()
    gap = log and reference is not None
    floor = float(np.finfo(np.float32).eps) * max(abs(reference or 0.0), 1e-30)
    for i, (label, curve) in enumerate(curves.items()):
        x, y = _xy(curve)
        if gap:
            y = np.maximum(y - reference, floor)
        style = (styles or {}).get(label, "-")
        ax.plot(x, y, style, color=COLORS[i % len(COLORS)], lw=1.8, label=label)
    if gap:
        ax.axhline(floor, color="0.5", ls=":", lw=1.0, label="float32 resolution of the loss")
    if reference is not None and not gap:
        ax.axhline(reference, color="0.3", ls="--", lw=1.2, label=reference_label)
    if log:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"{ylabel} − {reference_label}" if gap else ylabel)
    ax.legend(loc=legend_loc)
    return _save(fig, path)


def grid(f: Callable[..., jax.Array], xs: Any, ys: Any, *args: Any) -> np.ndarray:
    """``Z[i, j] = f(jnp.array([xs[j], ys[i]]), *args)``, evaluated in one vmapped call.

    ``f`` maps a point ``(2,)`` (and data ``args``, passed into ``jit`` as arguments) to a
    scalar. ``Z`` has shape ``(len(ys), len(xs))``, the layout :func:`landscape` expects.
    """
    xs, ys = jnp.asarray(xs, jnp.float32), jnp.asarray(ys, jnp.float32)
    gx, gy = jnp.meshgrid(xs, ys)
    points = jnp.stack([gx.ravel(), gy.ravel()], axis=-1)
    values = jax.jit(jax.vmap(f, in_axes=(0, *(None,) * len(args))))(points, *args)
    return np.asarray(values).reshape(gx.shape)


def landscape(
    xs: Any,
    ys: Any,
    Z: Any,
    path: str | Path,
    *,
    trajectories: Mapping[str, Any],
    title: str,
    xlabel: str,
    ylabel: str,
    optimum: Sequence[float] | None = None,
    optimum_label: str = "optimum",
    levels: int = 30,
) -> Path:
    """Contours of a loss over two parameters, with optimizer paths drawn on them.

    Args:
      xs, ys, Z: the grid and its loss values, ``Z.shape == (len(ys), len(xs))``
        (see :func:`grid`). Contour levels are spaced logarithmically above the minimum.
      trajectories: ``label -> (T, 2)`` parameter path; every path's first point is
        marked with a red dot (the start, as in seed 001's picture).
      optimum: the minimiser, marked with a star (labelled ``optimum_label``, e.g. "final
        parameters" for a landscape about where a run ended).
    """
    fig, (ax,) = _figure(figsize=(7.0, 5.6))
    Z = np.asarray(Z, dtype=np.float64)
    lo, hi = float(np.nanmin(Z)), float(np.nanmax(Z))
    span = max(hi - lo, 1e-12)
    lv = lo + span * np.geomspace(1e-4, 1.0, levels)
    cs = ax.contourf(xs, ys, Z, levels=np.concatenate([[lo], lv]), cmap="Blues_r", alpha=0.45)
    ax.contour(xs, ys, Z, levels=lv, colors="0.45", linewidths=0.5)
    fig.colorbar(cs, ax=ax, label="loss", format="%.3g")
    start = None
    for i, (label, path_xy) in enumerate(trajectories.items()):
        p = np.asarray(path_xy, dtype=np.float64)
        ax.plot(p[:, 0], p[:, 1], color=COLORS[(i + 1) % len(COLORS)], lw=2.0, label=label)
        ax.plot(p[-1, 0], p[-1, 1], "o", color=COLORS[(i + 1) % len(COLORS)], ms=4)
        start = p[0]
    if start is not None:
        ax.plot(*start, "o", color="red", ms=8, zorder=5, label="start")
    if optimum is not None:
        ax.plot(*optimum, "*", color="gold", mec="k", ms=15, zorder=5, label=optimum_label)
    ax.set_xlim(float(np.min(xs)), float(np.max(xs)))
    ax.set_ylim(float(np.min(ys)), float(np.max(ys)))
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if ax.get_legend_handles_labels()[1]:  # nothing labelled: no empty legend
        ax.legend(loc="lower left", fontsize=9, framealpha=0.9)
    return _save(fig, path)


def lr_sweep(
    learning_rates: Any,
    final_losses: Any,
    path: str | Path,
    *,
    title: str,
    edge: float | None = None,
    edge_label: str = "theory: 2/L",
    initial_loss: float | None = None,
    observed_edge: float | None = None,
    marks: Mapping[str, float] | None = None,
    ylabel: str = "loss after the last step",
    failed_label: str = "overflow (inf/NaN)",
) -> Path:
    """Final loss against learning rate (both log scale), with the divergence edge.

    Runs whose loss is NaN (overflowed, or failed by the caller's rule: ``failed_label``
    says which) are drawn as crosses at the top of the axis.
    ``marks`` (``label -> learning rate``) adds further dotted vertical lines, e.g. 1/L;
    ``ylabel`` names what ``final_losses`` hold (e.g. the loss above the optimum).
    """
    fig, (ax,) = _figure()
    lr = np.asarray(learning_rates, dtype=np.float64)
    y = np.asarray(final_losses, dtype=np.float64)
    ok = np.isfinite(y)
    ax.plot(lr[ok], y[ok], "o-", color=COLORS[0], ms=3.5, lw=1.4, label="final loss")
    if (~ok).any():
        top = np.nanmax(y[ok]) if ok.any() else 1.0
        ax.plot(
            lr[~ok], np.full((~ok).sum(), top), "x", color=COLORS[1], label=failed_label
        )
    if initial_loss is not None:
        ax.axhline(initial_loss, color="0.4", ls=":", lw=1.2, label="initial loss")
    if edge is not None:
        ax.axvline(edge, color=COLORS[1], ls="--", lw=1.6, label=f"{edge_label} = {edge:.4g}")
    if observed_edge is not None:
        ax.axvline(
            observed_edge, color=COLORS[2], ls="-.", lw=1.2, label=f"observed = {observed_edge:.4g}"
        )
    for i, (label, x) in enumerate((marks or {}).items()):
        color = COLORS[(i + 3) % len(COLORS)]
        ax.axvline(x, color=color, ls=":", lw=1.6, label=f"{label} = {x:.4g}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.set_xlabel("learning rate α")
    ax.set_ylabel(ylabel)
    ax.legend()
    return _save(fig, path)


def lines(
    x: Any,
    ys: Mapping[str, Any],
    path: str | Path,
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    log: bool = False,
    styles: Mapping[str, str] | None = None,
    logx: bool = False,
    legend_loc: str = "best",
) -> Path:
    """Several curves over one ``x`` (``label -> y``); ``styles`` maps a label to a line style.

    ``log`` and ``logx`` put the y and the x axis on a log scale; ``legend_loc`` places
    the legend (matplotlib's ``loc``).
    """
    fig, (ax,) = _figure()
    x = np.asarray(x, dtype=np.float64)
    for i, (label, y) in enumerate(ys.items()):
        style = (styles or {}).get(label, "-")
        ax.plot(x, _finite(y), style, color=COLORS[i % len(COLORS)], lw=1.8, label=label)
    if log:
        ax.set_yscale("log")
    if logx:
        ax.set_xscale("log")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(loc=legend_loc)
    return _save(fig, path)


def panels(
    data: Mapping[str, Mapping[str, Any]],
    path: str | Path,
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    log: bool = False,
    marker: str = "o",
) -> Path:
    """Side-by-side panels sharing the y axis: ``panel title -> {label -> y or (x, y)}``."""
    fig, axes = _figure(figsize=(4.2 * len(data), 4.4), ncols=len(data))
    for ax in axes[1:]:
        ax.sharey(axes[0])
    for ax, (panel, curves) in zip(axes, data.items()):
        for i, (label, curve) in enumerate(curves.items()):
            x, y = _xy(curve)
            ax.plot(x, y, marker=marker, ms=4, color=COLORS[i % len(COLORS)], lw=1.5, label=label)
        if log:
            ax.set_yscale("log")
        ax.set_title(panel)
        ax.set_xlabel(xlabel)
        ax.legend(fontsize=8)
    axes[0].set_ylabel(ylabel)
    fig.suptitle(title)
    return _save(fig, path)


def side_by_side(
    data: Mapping[str, Mapping[str, Any]],
    path: str | Path,
    *,
    title: str,
    xlabel: str | Sequence[str],
    ylabel: Sequence[str],
    log: bool | Sequence[bool] = False,
    styles: Mapping[str, str] | None = None,
    sharey: bool = False,
) -> Path:
    """Side-by-side panels, each with its own y axis: ``panel title -> {label -> y or (x, y)}``.

    Unlike :func:`panels`, the panels may show different quantities (a value and its error,
    say), each with its own x and y labels (one shared y range with ``sharey``). A label
    keeps its colour in every panel; ``styles`` maps a label to a line style or marker
    (``"--"``, ``":"``, ``"o"``; no colour letters).

    Args:
      xlabel: one label for every panel, or one per panel.
      ylabel: one label per panel.
      log: a log-scale y axis for every panel, or one flag per panel.
      sharey: one y range for all panels (for panels of the same quantity).
    """
    n = len(data)
    xlabels = [xlabel] * n if isinstance(xlabel, str) else list(xlabel)
    logs = [log] * n if isinstance(log, bool) else list(log)
    if not len(xlabels) == len(ylabel) == len(logs) == n:
        raise ValueError(
            f"`xlabel`, `ylabel` and `log` need one entry per panel ({n}); got "
            f"{len(xlabels)}, {len(ylabel)} and {len(logs)}."
        )
    labels = list(dict.fromkeys(label for curves in data.values() for label in curves))
    fig, axes = _figure(figsize=(4.6 * n, 4.4), ncols=n)
    for ax in axes[1:] if sharey else ():
        ax.sharey(axes[0])
    for ax, (panel, curves), xl, yl, lg in zip(axes, data.items(), xlabels, ylabel, logs):
        for label, curve in curves.items():
            x, y = _xy(curve)
            color = COLORS[labels.index(label) % len(COLORS)]
            ax.plot(x, y, (styles or {}).get(label, "-"), color=color, lw=1.6, ms=4, label=label)
        if lg:
            ax.set_yscale("log")
        ax.set_title(panel)
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    return _save(fig, path)
