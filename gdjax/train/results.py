"""What a run returns: :class:`FitResult`, :class:`SweepResult`, :class:`DivergenceError`.

One convention for both: a run that diverged has ``diverged_at`` = the step whose loss or
update was not finite (−1 when none), keeps the last finite parameters, and its loss
history holds NaN after the diverged step (the non-finite loss itself where that step
was recorded). ``final_loss`` is the loss of the final parameters on the whole data.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import numpy as np
import optax

__all__ = ["DivergenceError", "FitResult", "SweepResult"]


class FitResult(NamedTuple):
    """What :func:`gdjax.fit` returns (in a sweep, every field has a leading runs axis).

    Attributes:
      params: the final parameters (the last finite ones if the run diverged).
      opt_state: the optimizer state that goes with ``params``.
      losses: recorded losses (a NumPy array, on the host), shape ``(T,)`` with
        ``T = ceil(steps / record_every)``: ``losses[i]`` is the loss at ``params_t`` for
        ``t = i * record_every``, before that step's update; NaN after a diverged step.
      final_loss: the loss of ``params`` on the whole data.
      steps: the number of updates applied (``diverged_at`` if the run diverged).
      diverged: whether a non-finite loss or update stopped the run.
      diverged_at: the step ``t`` whose loss/update was not finite, or −1.
      trajectory: with ``trajectory=True``, the recorded ``params_t`` (NumPy), each leaf stacked
        on a leading axis of length ``T`` (aligned with ``losses``); otherwise None.
      key: the PRNG key that drew the mini-batches (None for full-batch runs).
      checkpoint_error: set when a checkpoint could not be written: the error, with where
        the last good checkpoint is (the result itself is complete).
      monitor: with ``monitor=fn``, ``fn``'s outputs at the recorded steps (NumPy), each
        leaf stacked on a leading axis of length ``T`` (aligned with ``losses``; NaN, or 0
        in an integer leaf, after a diverged step); otherwise None.
    """

    params: Any
    opt_state: optax.OptState
    losses: jax.Array
    final_loss: jax.Array
    steps: Any
    diverged: Any
    diverged_at: Any
    trajectory: Any | None
    key: jax.Array | None
    checkpoint_error: str | None = None
    monitor: Any | None = None

    def _repr_html_(self) -> str:
        """A compact table and a small loss curve (how Jupyter shows a result)."""
        from gdjax._notebook import fit_result_html

        return fit_result_html(self)


class SweepResult(NamedTuple):
    """What :func:`gdjax.sweep` returns, for ``K`` runs (settings × seeds).

    Attributes:
      settings: name -> ``(K,)`` array: the hyperparameters of each run, and ``"seed"``
        when seeds were given.
      runs: the runs as one :class:`FitResult` whose fields have a leading axis ``K``.
      best_index: the run with the lowest ``final_loss`` among those that did not
        diverge; None when every run diverged.
      best: that run's settings, name -> Python scalar ({} when every run diverged).
      retired_at: ``(K,)`` the step at which ``patience`` retired each run (−1: never);
        a retired run's ``runs.steps`` is that step and its later records are NaN.
    """

    settings: dict[str, jax.Array]
    runs: FitResult
    best_index: int | None
    best: dict[str, Any]
    retired_at: Any = None

    # the fields of the runs most often read, as before
    @property
    def losses(self) -> jax.Array:
        """``(K, T)`` recorded losses (NaN after a run diverged)."""
        return self.runs.losses

    @property
    def final_loss(self) -> jax.Array:
        return self.runs.final_loss

    @property
    def params(self) -> Any:
        return self.runs.params

    @property
    def diverged(self) -> jax.Array:
        return self.runs.diverged

    @property
    def diverged_at(self) -> jax.Array:
        return self.runs.diverged_at

    def _repr_html_(self) -> str:
        from gdjax._notebook import fit_result_html

        return fit_result_html(self.runs)

    def run(self, i: int) -> FitResult:
        """Run ``i`` as a plain :class:`FitResult` (its slice of every field)."""
        return jax.tree_util.tree_map(lambda x: x[i], self.runs)


class DivergenceError(FloatingPointError):
    """Raised by ``fit(..., on_divergence="raise")``; ``.step`` and ``.result`` say more,
    and ``.origin`` where the first non-finite value appeared (the first named
    intermediate, from :func:`gdjax.diagnostics.nonfinite_origin` at the last finite
    parameters and the diverged step's batch), when it could be traced."""

    def __init__(self, step: int, result: FitResult, origin: str | None = None):
        where = "" if origin is None else f" Where: {origin.rstrip('.')}."
        super().__init__(
            f"fit: the loss or the update became non-finite at step {step} (loss "
            f"{_last_recorded(result.losses)}).{where} The last finite parameters are in "
            f"`err.result.params`. Lower the learning rate, or pass on_divergence='stop'."
        )
        self.step = step
        self.result = result
        self.origin = origin  # gd.diagnostics.nonfinite_origin at the diverged step


def _last_recorded(losses: Any) -> str:
    arr = np.asarray(losses)
    arr = arr[~np.isnan(arr)]
    return repr(float(arr[-1])) if arr.size else "not recorded"
