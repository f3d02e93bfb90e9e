r"""``gd.lr_find``: a learning-rate range test run as one vmapped program.

The usual range test (Smith, 2017, "Cyclical Learning Rates for Training Neural
Networks") raises the rate step by step within one run. Here every rate gets its own
short run from the same start, and all of them run at once: ``gd.sweep`` of the
optimizer with its learning rate replaced by ``K`` log-spaced rates
:math:`\eta_1 < … < \eta_K`, compiled once. After ``steps`` steps each run is scored by
its loss :math:`\mathcal L_i` on the whole data. With :math:`\mathcal L_0` the loss at the
start:

* run ``i`` *diverged* when its loss became non-finite or :math:`\mathcal L_i > \mathcal L_0`;
* the *best* rate :math:`\eta^\star` has the lowest :math:`\mathcal L_i` among the others;
* the *edge* :math:`\eta_e` is the smallest diverged rate above :math:`\eta^\star`;
* the *suggestion* is the largest rate that did not diverge and is at most
  :math:`\min(\eta^\star, s\,\eta_e)` (``safety`` :math:`s = 1/2` by default).

On a quadratic with Hessian eigenvalues :math:`\mu \le … \le L`, gradient descent
multiplies the error along eigenvector :math:`i` by :math:`1 - \eta\lambda_i` per step, so
it diverges for :math:`\eta > 2/L`: the edge lands within one grid step above
:math:`2/L`, and the suggestion, at most half of it, sits near :math:`1/L`, the largest
rate at which no component overshoots.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gdjax._validate import UsageError, check_int, check_positive

__all__ = ["LRFindResult", "lr_find"]


class LRFindResult(NamedTuple):
    """What :func:`lr_find` returns.

    Attributes:
      rates: ``(K,)`` the tried learning rates, ascending.
      losses: ``(K, T)`` each run's recorded loss curve (NaN after it diverged).
      final_loss: ``(K,)`` each run's loss on the whole data after ``steps`` steps.
      initial_loss: the loss at the start.
      diverged: ``(K,)`` non-finite, or ended above ``initial_loss``.
      best: the rate with the lowest ``final_loss`` (None when every run diverged).
      edge: the smallest diverged rate above ``best`` (None: no divergence on the grid).
      suggestion: the robust choice (see the module text); None when every run diverged.
      sweep: the underlying :class:`gdjax.SweepResult`.
    """

    rates: np.ndarray
    losses: np.ndarray
    final_loss: np.ndarray
    initial_loss: float
    diverged: np.ndarray
    best: float | None
    edge: float | None
    suggestion: float | None
    sweep: Any

    def plot(
        self,
        path: str | Path,
        *,
        title: str = "learning-rate range test",
        marks: dict[str, float] | None = None,
    ) -> Path:
        """Loss after the run against the rate (log-log), with the suggestion, the edge
        and any further ``marks`` (``label -> rate``, e.g. ``{"2/L": 2 / L}``)."""
        from gdjax import plot

        shown = np.where(self.diverged & np.isfinite(self.final_loss), np.nan, self.final_loss)
        extra = {} if self.suggestion is None else {"suggestion": self.suggestion}
        return plot.lr_sweep(
            self.rates,
            shown,
            path,
            title=title,
            edge=self.edge,
            edge_label="divergence edge",
            initial_loss=self.initial_loss,
            marks={**extra, **(marks or {})},
            ylabel="loss after the run (whole data)",
            failed_label="diverged (non-finite, or above the initial loss)",
        )


def _rates_and_optimizer(optimizer: Any, rates: Any, min_lr: float, max_lr: float, num: int):
    """(rates, the sweep's optimizer or factory, whether it is a factory)."""
    from gdjax import optim

    rule = isinstance(optimizer, optim.Rule)
    if rule and "learning_rate" not in optimizer.hyperparams:
        raise UsageError(f"lr_find: {optimizer!r} has no `learning_rate` to sweep.")
    held = optim.num_settings(optimizer) if rule else None
    if rates is None and held is not None:
        rates = np.asarray(optimizer.hyperparams["learning_rate"])
    if rates is None:
        check_positive("min_lr", min_lr)
        check_positive("max_lr", max_lr)
        if not min_lr < max_lr:
            raise UsageError(f"lr_find: `min_lr` ({min_lr}) must be below `max_lr` ({max_lr}).")
        rates = np.geomspace(min_lr, max_lr, check_int("num", num, minimum=2))
    rates = np.asarray(rates, np.float64)
    if rates.ndim != 1 or rates.size < 2 or not np.all(np.isfinite(rates)) or (rates <= 0).any():
        raise UsageError(
            "lr_find: `rates` must be a 1-D array of at least two positive learning rates, "
            "e.g. np.geomspace(1e-4, 1.0, 48)."
        )
    if np.any(np.diff(rates) <= 0):
        raise UsageError("lr_find: `rates` must be strictly increasing.")
    lr = jnp.asarray(rates, jnp.float32)
    if rule:
        try:
            return rates, optimizer.replace(learning_rate=lr), False
        except (ValueError, TypeError) as err:
            raise UsageError(
                f"lr_find: cannot set the learning rate of {optimizer!r}: {err}. Pass a rule "
                f"with a constant learning rate, or a factory (e.g. gd.optim.sgd)."
            ) from None
    if hasattr(optimizer, "update") or not callable(optimizer):
        raise UsageError(
            "lr_find: `optimizer` must be a gd.optim rule (e.g. gd.optim.adam(1e-3); its "
            "learning rate is replaced by the rates tried) or a factory of the learning rate "
            "(e.g. gd.optim.sgd, or lambda learning_rate: optax.adam(learning_rate))."
        )
    return rates, optimizer, True


def lr_find(
    loss_fn,
    params: Any,
    optimizer: Any,
    data: Any = None,
    *,
    steps: int = 100,
    min_lr: float = 1e-5,
    max_lr: float = 10.0,
    num: int = 48,
    rates: Any = None,
    batch_size: int | None = None,
    key: Any = None,
    record_every: int = 1,
    safety: float = 0.5,
    progress: bool | None = None,
) -> LRFindResult:
    """Try ``num`` log-spaced learning rates at once and suggest one below the divergence edge.

    Args:
      loss_fn, params, data, batch_size, key, record_every, progress: as in
        :func:`gdjax.fit`; every run starts at ``params``.
      optimizer: a ``gd.optim`` rule, whose learning rate is replaced by the rates (a rule
        already built with a 1-D learning rate brings its own rates); or a factory of the
        learning rate (``gd.optim.sgd``, ``lambda learning_rate: optax.adam(...)``).
      steps: steps of every run (all rates run the same steps, together).
      min_lr, max_lr, num: the grid ``np.geomspace(min_lr, max_lr, num)``.
      rates: an explicit increasing 1-D grid instead.
      safety: the suggestion is at most ``safety × edge`` (0 < safety ≤ 1).

    Returns:
      An :class:`LRFindResult`; ``.suggestion`` is the rate to use, ``.plot(path)`` draws
      the test.

    >>> res = gd.lr_find(model.loss, params, gd.optim.sgd(0.1), data, steps=50)
    >>> res.suggestion, res.edge
    """
    from gdjax.train import sweep

    steps = check_int("steps", steps)
    check_positive("safety", safety)
    if safety > 1:
        raise UsageError(f"`safety` must lie in (0, 1] (a fraction of the edge), got {safety}.")
    rates, opt, factory = _rates_and_optimizer(optimizer, rates, min_lr, max_lr, num)
    res = sweep(
        loss_fn,
        params,
        opt,
        data,
        steps=steps,
        learning_rates=jnp.asarray(rates, jnp.float32) if factory else None,
        batch_size=batch_size,
        key=key,
        record_every=record_every,
        progress=progress,
        chunk_size=steps,  # one chunk: no re-packing as runs diverge
    )
    initial = float(_initial_loss(loss_fn, params, data))
    final = np.asarray(res.final_loss, np.float64)
    diverged = np.asarray(res.diverged) | ~np.isfinite(final) | (final > initial)
    best = edge = suggestion = None
    if not diverged.all():
        i_best = int(np.argmin(np.where(diverged, np.inf, final)))
        best = float(rates[i_best])
        above = np.flatnonzero(diverged & (rates > best))
        edge = float(rates[above[0]]) if above.size else None
        cap = best if edge is None else min(best, safety * edge)
        ok = np.flatnonzero(~diverged & (rates <= cap * (1 + 1e-9)))
        suggestion = float(rates[ok[-1]]) if ok.size else best
    return LRFindResult(
        rates=rates,
        losses=np.asarray(res.losses),
        final_loss=final,
        initial_loss=initial,
        diverged=diverged,
        best=best,
        edge=edge,
        suggestion=suggestion,
        sweep=res,
    )


def _initial_loss(loss_fn, params, data):
    return jax.jit(loss_fn)(params, data)
